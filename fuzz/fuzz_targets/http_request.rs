//! An HTTP/1.1 request head through everything the server does with it before the engine:
//! head parsing, the route table, the stream start (`from=`, `Last-Event-ID`) and the token
//! query parameter. Never a panic; a complete head's length is within the buffer and the limit.
#![no_main]
use fanfare_proto::http::{self, ParsedHead};
use libfuzzer_sys::fuzz_target;

const HEADER_BYTES_MAX: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    match http::parse_head(data, HEADER_BYTES_MAX) {
        ParsedHead::Head(h) => {
            assert!(h.len <= data.len() && h.len <= HEADER_BYTES_MAX);
            let route = http::route(&h.method, &h.path);
            if let http::Route::Stream { ns, topic } | http::Route::Publish { ns, topic } = route {
                assert!(h.path.ends_with(topic) && h.path.contains(ns));
            }
            let _ = http::start_from(h.last_event_id.as_deref(), h.query.as_deref());
            if let Some(t) = http::query_param(h.query.as_deref(), "token") {
                let _ = http::percent_decode(t);
            }
        }
        ParsedHead::Bad { status, .. } => assert!(status == 400 || status == 431),
        ParsedHead::Partial => {}
    }
    // The same functions on raw text, as HTTP/2 hands them over.
    if let Ok(s) = std::str::from_utf8(data) {
        let (path, query) = s.split_once('?').unwrap_or((s, ""));
        let _ = http::route("GET", path);
        let _ = http::start_from(None, Some(query));
        let _ = http::parse_from(s);
    }
});
