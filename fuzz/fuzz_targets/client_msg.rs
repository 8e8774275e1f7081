//! Client message decode: any bytes either decode to a message that re-encodes and decodes
//! to itself, or give an error; never a panic. The publish fast path (`message/fast.rs`)
//! always agrees with the generic verifier, errors included.
#![no_main]
use bytes::Bytes;
use fanfare_proto::{ClientMsg, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lim = DecodeLimits::default();
    let buf = Bytes::copy_from_slice(data);
    assert_eq!(ClientMsg::decode(&buf, &lim), ClientMsg::decode_general(&buf, &lim));
    if let Ok(m) = ClientMsg::decode(&buf, &lim) {
        let again = ClientMsg::decode(&Bytes::from(m.encode_to_vec()), &lim);
        assert_eq!(again.as_ref(), Ok(&m));
    }
});
