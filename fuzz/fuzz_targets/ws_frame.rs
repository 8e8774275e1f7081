//! WebSocket frame decoder (server role, small limits): bytes fed in two chunks decode to the
//! same messages as fed at once; never a panic; errors always carry a valid close code.
#![no_main]
use bytes::BytesMut;
use fanfare_proto::ws::{Decoder, Limits, Role};
use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]]) -> (Vec<fanfare_proto::ws::Message>, Option<u16>) {
    let mut d = Decoder::new(Role::Server, Limits { frame_bytes_max: 4096, message_bytes_max: 8192 });
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e.close_code())),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) % data.len();
    let rest = &data[1..];
    let cut = cut.min(rest.len());
    let whole = run(&[rest]);
    let split = run(&[&rest[..cut], &rest[cut..]]);
    assert_eq!(whole, split);
    if let Some(code) = whole.1 {
        assert!(matches!(code, 1002 | 1007 | 1009));
    }
});
