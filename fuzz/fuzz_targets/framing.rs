//! The length-prefixed framing decoder (HTTP frame streams, node links), fed in arbitrary
//! chunks: never a panic; frames come out whole, in order, within the limit, and re-encode to
//! the bytes they came from.
#![no_main]
use bytes::BytesMut;
use fanfare_proto::framing;
use libfuzzer_sys::fuzz_target;

const FRAME_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let dec = framing::Decoder::new(FRAME_MAX);
    let mut buf = BytesMut::new();
    let mut consumed = Vec::new();
    for chunk in rest.chunks(usize::from(split).max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= FRAME_MAX);
                    consumed.extend_from_slice(&framing::encode_to_bytes(&frame));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    // Everything decoded is exactly the input's prefix.
    assert_eq!(&rest[..consumed.len()], &consumed[..]);
});
