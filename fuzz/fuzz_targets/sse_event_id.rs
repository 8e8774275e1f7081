//! `Last-Event-ID` parser and the SSE event parser: never a panic; an id that parses
//! re-prints to an id that parses to the same position.
#![no_main]
use fanfare_proto::sse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok((e, q)) = sse::parse_event_id(s) {
            assert_eq!(sse::parse_event_id(&format!("{e}-{q}")), Ok((e, q)));
        }
        let (_events, used) = sse::parse_events(s);
        assert!(used <= s.len());
    }
});
