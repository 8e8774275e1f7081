//! The HTTP side of the protocol, with no I/O: HTTP/1.1 request heads, the HTTP API's route
//! table (shared by HTTP/1.1 and HTTP/2), query strings and stream start positions.
//!
//! | request | route |
//! |---|---|
//! | `POST /v1/topics/{ns}/{topic}` | [`Route::Publish`] |
//! | `GET /v1/topics/{ns}/{topic}` | [`Route::Stream`] (`from=latest`, `from=last:N`, `from=<epoch>-<seq>`; an SSE `Last-Event-ID: <epoch>-<seq>` wins and resumes after it) |
//! | `GET /v1/topics/{ns}/{topic}/presence` | [`Route::Presence`] |
//! | `GET /v1/admin/...` | [`Route::Admin`] |
//! | `GET /healthz`, `GET /metrics` | [`Route::Healthz`], [`Route::Metrics`] |
//! | `GET /`, `GET /console/...` | [`Route::Console`] |
//! | `OPTIONS` on any of those paths but the console's | [`Route::Preflight`] (CORS) |
//! | another method on a topic path, `/healthz` or `/metrics`; anything else | [`Route::MethodNotAllowed`]; [`Route::NotFound`] |
//!
//! Names in a path are not checked here: the engine checks them when it makes a topic key.

use crate::message::Start;

/// Most header lines in a request.
pub const HEADERS_MAX: usize = 64;

/// An HTTP/1.1 request head, with the headers the API reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method (`GET`, `POST`, ...).
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The query string (after `?`), as sent.
    pub query: Option<String>,
    /// `Content-Length`, when given.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The connection ends after this request (`Connection: close`, or HTTP/1.0).
    pub close: bool,
    /// `Accept` names `text/event-stream`.
    pub accept_sse: bool,
    /// `Last-Event-ID`, as sent.
    pub last_event_id: Option<String>,
    /// `Authorization`, as sent.
    pub authorization: Option<String>,
    /// `Idempotency-Key`, as sent.
    pub idempotency_key: Option<String>,
    /// `Origin` (a browser page's), as sent.
    pub origin: Option<String>,
    /// `Host`, as sent.
    pub host: Option<String>,
    /// `Connection` names `upgrade`.
    pub upgrade: bool,
    /// `Expect: 100-continue`: the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
}

/// What [`parse_head`] made of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedHead {
    /// The head is not complete yet.
    Partial,
    /// A complete head.
    Head(RequestHead),
    /// Not a request the server answers; `status` (400 or 431) and why.
    Bad {
        /// The HTTP status to answer with.
        status: u16,
        /// Why, for the client.
        reason: String,
    },
}

/// Parses the request head at the start of `buf` (at most `header_bytes_max` bytes and
/// [`HEADERS_MAX`] lines).
pub fn parse_head(buf: &[u8], header_bytes_max: usize) -> ParsedHead {
    let bad = |status, reason: String| ParsedHead::Bad { status, reason };
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= header_bytes_max => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return bad(
                431,
                format!("request headers over {header_bytes_max} bytes or {HEADERS_MAX} lines"),
            )
        }
        Ok(httparse::Status::Partial) if buf.len() > header_bytes_max => {
            return bad(
                431,
                format!("request headers over {header_bytes_max} bytes"),
            )
        }
        Ok(httparse::Status::Partial) => return ParsedHead::Partial,
        Err(e) => return bad(400, format!("malformed HTTP request: {e}")),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut head = RequestHead {
        method: req.method.unwrap_or("").to_owned(),
        path,
        query,
        content_length: None,
        chunked: false,
        close: req.version == Some(0),
        accept_sse: false,
        last_event_id: None,
        authorization: None,
        idempotency_key: None,
        origin: None,
        host: None,
        upgrade: false,
        expect_continue: false,
        len,
    };
    for h in req.headers.iter() {
        let v = String::from_utf8_lossy(h.value);
        let v = v.trim();
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            match v.parse() {
                Ok(l) => head.content_length = Some(l),
                Err(_) => return bad(400, "invalid Content-Length".into()),
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = v.to_ascii_lowercase().contains("chunked");
        } else if n.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            head.close |= v.contains("close");
            head.upgrade |= v.contains("upgrade");
        } else if n.eq_ignore_ascii_case("accept") {
            head.accept_sse |= v.contains("text/event-stream");
        } else if n.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = Some(v.to_owned());
        } else if n.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(v.to_owned());
        } else if n.eq_ignore_ascii_case("origin") {
            head.origin = Some(v.to_owned());
        } else if n.eq_ignore_ascii_case("host") {
            head.host = Some(v.to_owned());
        } else if n.eq_ignore_ascii_case("idempotency-key") {
            head.idempotency_key = Some(v.to_owned());
        } else if n.eq_ignore_ascii_case("expect") {
            head.expect_continue |= v.eq_ignore_ascii_case("100-continue");
        }
    }
    ParsedHead::Head(head)
}

/// Where an HTTP API request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /healthz`.
    Healthz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /v1/admin/...`: the whole path.
    Admin(&'a str),
    /// `GET /` and `GET /console/...`: the live console's files (the whole path).
    Console(&'a str),
    /// `POST /v1/topics/{ns}/{topic}`.
    Publish {
        /// The namespace, unchecked.
        ns: &'a str,
        /// The topic, unchecked.
        topic: &'a str,
    },
    /// `GET /v1/topics/{ns}/{topic}`.
    Stream {
        /// The namespace, unchecked.
        ns: &'a str,
        /// The topic, unchecked.
        topic: &'a str,
    },
    /// `GET /v1/topics/{ns}/{topic}/presence`.
    Presence {
        /// The namespace, unchecked.
        ns: &'a str,
        /// The topic, unchecked.
        topic: &'a str,
    },
    /// `OPTIONS` on a known path: a browser's CORS preflight.
    Preflight,
    /// A known path with another method (405).
    MethodNotAllowed,
    /// Anything else (404).
    NotFound,
}

/// The HTTP API's route table.
pub fn route<'a>(method: &str, path: &'a str) -> Route<'a> {
    let topic = path
        .strip_prefix("/v1/topics/")
        .and_then(|rest| rest.split_once('/'));
    // Names never hold `/`, so `{topic}/presence` cannot be a topic.
    if let Some((ns, topic)) = topic.and_then(|(ns, t)| Some((ns, t.strip_suffix("/presence")?))) {
        return match method {
            "GET" => Route::Presence { ns, topic },
            "OPTIONS" => Route::Preflight,
            _ => Route::MethodNotAllowed,
        };
    }
    match (method, path, topic) {
        ("GET", "/healthz", _) => Route::Healthz,
        ("GET", "/metrics", _) => Route::Metrics,
        ("GET", p, _) if p.starts_with("/v1/admin/") => Route::Admin(p),
        ("GET", p, _) if p == "/" || p.starts_with("/console/") => Route::Console(p),
        ("POST", _, Some((ns, topic))) => Route::Publish { ns, topic },
        ("GET", _, Some((ns, topic))) => Route::Stream { ns, topic },
        ("OPTIONS", p, topic)
            if topic.is_some()
                || matches!(p, "/healthz" | "/metrics")
                || p.starts_with("/v1/admin/") =>
        {
            Route::Preflight
        }
        (_, "/healthz" | "/metrics", _) | (_, _, Some(_)) => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

/// The value of `name` in a query string (`a=1&b=2`), as sent (not percent-decoded).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Decodes `%XX` escapes (a JWT is URL-safe, but clients may still escape it).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a stream starts: `Last-Event-ID` (the last event seen) wins over `from=`.
pub fn start_from(last_event_id: Option<&str>, query: Option<&str>) -> Result<Start, String> {
    if let Some(id) = last_event_id {
        let (epoch, seq) = crate::sse::parse_event_id(id).map_err(|e| e.to_string())?;
        return Ok(Start::At {
            epoch,
            seq: seq.saturating_add(1),
        });
    }
    let from = query_param(query, "from").unwrap_or("latest");
    parse_from(from)
}

/// Parses `latest`, `last:N` or `<epoch>-<seq>`.
pub fn parse_from(s: &str) -> Result<Start, String> {
    if s == "latest" {
        return Ok(Start::Latest);
    }
    if let Some(n) = s.strip_prefix("last:") {
        return n
            .parse()
            .map(Start::LastN)
            .map_err(|_| format!("bad from={s}: last:N needs a count"));
    }
    let (epoch, seq) = crate::sse::parse_event_id(s)
        .map_err(|_| format!("bad from={s}: use latest, last:N or <epoch>-<seq>"))?;
    Ok(Start::At { epoch, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_route_table() {
        assert_eq!(route("GET", "/healthz"), Route::Healthz);
        assert_eq!(route("POST", "/healthz"), Route::MethodNotAllowed);
        assert_eq!(
            route("POST", "/v1/topics/chat/room-1"),
            Route::Publish {
                ns: "chat",
                topic: "room-1"
            }
        );
        assert_eq!(
            route("GET", "/v1/topics/chat/room-1"),
            Route::Stream {
                ns: "chat",
                topic: "room-1"
            }
        );
        assert_eq!(route("DELETE", "/v1/topics/a/b"), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/v1/topics/a"), Route::NotFound);
        assert_eq!(
            route("GET", "/v1/admin/stats"),
            Route::Admin("/v1/admin/stats")
        );
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        assert_eq!(route("OPTIONS", "/v1/topics/a/b"), Route::Preflight);
        assert_eq!(route("OPTIONS", "/nope"), Route::NotFound);
    }

    #[test]
    fn heads_and_positions() {
        let req = b"POST /v1/topics/a/b?from=last:3 HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello";
        let ParsedHead::Head(h) = parse_head(req, 1024) else {
            panic!("a complete head")
        };
        assert_eq!(
            (h.method.as_str(), h.path.as_str()),
            ("POST", "/v1/topics/a/b")
        );
        assert_eq!(h.content_length, Some(5));
        assert!(h.expect_continue);
        assert_eq!(h.len, req.len() - 5);
        assert_eq!(start_from(None, h.query.as_deref()), Ok(Start::LastN(3)));
        assert_eq!(parse_head(&req[..10], 1024), ParsedHead::Partial);
        assert!(matches!(
            parse_head(req, 20),
            ParsedHead::Bad { status: 431, .. }
        ));
        assert_eq!(
            start_from(Some("7-9"), Some("from=latest")),
            Ok(Start::At { epoch: 7, seq: 10 })
        );
        assert!(parse_from("last:x").is_err());
        assert_eq!(percent_decode("a%2Eb%zz"), "a.b%zz");
        assert_eq!(query_param(Some("a=1&token=x"), "token"), Some("x"));
    }
}
