//! Access tokens: any string given to the verifier is refused or accepted without a panic
//! (header parsing, algorithm and key checks). With a first byte of 0, the rest is taken as a
//! claims document and signed with the verifier's key, so claim parsing and the claims-to-grant
//! rules (names, patterns, limits) are fuzzed behind a valid signature too.
#![no_main]
use base64::Engine as _;
use fanfare_net::auth::{Key, Verifier};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fanfare-fuzz-secret-fanfare-fuzz-secret";

fn verifier() -> Verifier {
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let key = Key::hs256("fz", &b64).expect("a valid test key");
    Verifier::new(&[key], std::time::Duration::from_secs(0)).expect("one key")
}

fuzz_target!(|data: &[u8]| {
    let v = verifier();
    match data.split_first() {
        Some((0, claims)) => {
            let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let head = b64.encode(br#"{"alg":"HS256","kid":"fz","typ":"JWT"}"#);
            let body = b64.encode(claims);
            let signing = format!("{head}.{body}");
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
            let sig = b64.encode(ring::hmac::sign(&key, signing.as_bytes()).as_ref());
            if let Ok(g) = v.verify(&format!("{signing}.{sig}")) {
                // A grant names a subject and holds a bounded permission list.
                assert!(!g.subject.is_empty());
            }
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(data) {
                let _ = v.verify(s);
            }
        }
    }
});
