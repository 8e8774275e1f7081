//! CORS over real sockets: preflights answered, `Access-Control-Allow-Origin` from the origin
//! rules, and a page whose origin is not allowed refused (403) before anything happens, so a
//! web page cannot make a broker with authentication off publish for it.

use std::time::Duration;

mod common;
use common::{raw, server_with};

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn post(origin: &str, host: &str) -> String {
    format!(
        "POST /v1/topics/ns/c HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
}

fn preflight(origin: &str) -> String {
    format!(
        "OPTIONS /v1/topics/ns/c HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: idempotency-key\r\nConnection: close\r\n\r\n"
    )
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn with_authentication_off_only_local_pages_and_the_node_itself() {
    let srv = server_with(|_| {});
    let a = srv.local_addr();
    // A page on the web: refused before anything is published, preflight or not.
    let resp = raw(a, post("https://evil.example", "x").as_bytes(), WAIT);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let resp = raw(a, preflight("https://evil.example").as_bytes(), WAIT);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let resp = raw(a, post("null", "x").as_bytes(), WAIT);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert_eq!(srv.broker().stats_total().publishes, 0);
    // A page on this machine: preflight, then the publish, with the CORS headers.
    let resp = raw(a, preflight("http://localhost:3000").as_bytes(), WAIT);
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert!(header(&resp, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    assert!(header(&resp, "access-control-allow-headers")
        .is_some_and(|h| h.to_ascii_lowercase().contains("idempotency-key")));
    let resp = raw(a, post("http://localhost:3000", "x").as_bytes(), WAIT);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(header(&resp, "vary"), Some("Origin"));
    // The node's own origin (a page it serves), by its Host.
    let resp = raw(
        a,
        post("http://broker.example:7070", "broker.example:7070").as_bytes(),
        WAIT,
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // An allowed page's stream gets the header too.
    let resp = raw(
        a,
        b"GET /v1/topics/ns/c?from=last:1 HTTP/1.1\r\nHost: x\r\nOrigin: http://127.0.0.1:8080\r\nAccept: text/event-stream\r\n\r\n",
        Duration::from_millis(500),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("http://127.0.0.1:8080")
    );
    // WebSocket upgrades follow the same rule.
    let ws = |origin: &str| {
        let req = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\r\n"
        );
        raw(a, req.as_bytes(), Duration::from_millis(300))
    };
    assert!(ws("https://evil.example").starts_with("HTTP/1.1 403"));
    assert!(ws("http://localhost:5173").starts_with("HTTP/1.1 101"));
    assert_eq!(srv.broker().stats_total().publishes, 2);
    assert!(srv.metrics().total("origin_rejected") >= 4);
}

#[test]
fn an_explicit_list_is_exactly_what_is_allowed() {
    let srv = server_with(|c| c.auth.allowed_origins = vec!["https://app.example".into()]);
    let a = srv.local_addr();
    let resp = raw(a, post("https://app.example", "x").as_bytes(), WAIT);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let resp = raw(a, post("http://localhost:3000", "x").as_bytes(), WAIT);
    assert!(resp.starts_with("HTTP/1.1 403"), "not in the list: {resp}");
    // Requests without Origin (not from a browser page) are not CORS requests.
    let resp = raw(
        a,
        b"POST /v1/topics/ns/c HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz",
        WAIT,
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(header(&resp, "access-control-allow-origin").is_none());
}
