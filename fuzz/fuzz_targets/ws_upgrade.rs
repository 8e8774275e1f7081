//! Upgrade request parser: never a panic; an accepted request has a 16-byte key.
#![no_main]
use fanfare_proto::ws;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match ws::parse_upgrade(data, 16 * 1024) {
        Ok(Some((up, n))) => {
            assert!(n <= data.len());
            let _ = ws::accept_response(&up.key, None);
        }
        Ok(None) => assert!(data.len() <= 16 * 1024),
        Err(e) => assert!([400, 405, 426, 431].contains(&e.status())),
    }
    let _ = ws::parse_client_response(data, "dGhlIHNhbXBsZSBub25jZQ==");
});
