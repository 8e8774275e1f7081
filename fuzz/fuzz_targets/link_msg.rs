//! Link message decode (what a node reads from another): never a panic, and what decodes
//! round-trips.
#![no_main]
use bytes::Bytes;
use fanfare_proto::{DecodeLimits, LinkMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lim = DecodeLimits::default();
    if let Ok(m) = LinkMsg::decode(&Bytes::copy_from_slice(data), &lim) {
        assert_eq!(LinkMsg::decode(&Bytes::from(m.encode_to_vec()), &lim).as_ref(), Ok(&m));
    }
});
