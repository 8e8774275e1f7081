//! Server message decode (what every client runs on what a server sends): never a panic, and
//! what decodes round-trips.
#![no_main]
use bytes::Bytes;
use fanfare_proto::{DecodeLimits, ServerMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lim = DecodeLimits::default();
    if let Ok(m) = ServerMsg::decode(&Bytes::copy_from_slice(data), &lim) {
        assert_eq!(ServerMsg::decode(&Bytes::from(m.encode_to_vec()), &lim).as_ref(), Ok(&m));
    }
});
