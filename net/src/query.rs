//! Query strings and stream positions as HTTP clients write them: `?from=latest`,
//! `from=last:N`, `from=<epoch>-<seq>`, `token=...`, and SSE's `Last-Event-ID`.

use fanfare_core::Start;

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
        let (epoch, seq) = fanfare_proto::sse::parse_event_id(id).map_err(|e| e.to_string())?;
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
    let (epoch, seq) = fanfare_proto::sse::parse_event_id(s)
        .map_err(|_| format!("bad from={s}: use latest, last:N or <epoch>-<seq>"))?;
    Ok(Start::At { epoch, seq })
}
