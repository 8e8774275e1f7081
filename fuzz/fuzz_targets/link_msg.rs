//! Link message decode (and server message decode, which clients run): never a panic, and
//! what decodes round-trips.
#![no_main]
use bytes::Bytes;
use fanfare_proto::{DecodeLimits, LinkMsg, ServerMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lim = DecodeLimits::default();
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(m) = LinkMsg::decode(&bytes, &lim) {
        assert_eq!(LinkMsg::decode(&Bytes::from(m.encode_to_vec()), &lim).as_ref(), Ok(&m));
    }
    if let Ok(m) = ServerMsg::decode(&bytes, &lim) {
        assert_eq!(ServerMsg::decode(&Bytes::from(m.encode_to_vec()), &lim).as_ref(), Ok(&m));
    }
});
