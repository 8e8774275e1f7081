//! Server-Sent Events encoding and `Last-Event-ID` parsing.
//!
//! Each item is one event whose `id` is `<epoch>-<seq>`, so a browser's `EventSource`
//! reconnects with `Last-Event-ID: <epoch>-<seq>` and the server resumes at `seq + 1`.
//!
//! Event types:
//! - `item`: the payload is UTF-8 with no carriage return; `data:` lines carry it as is
//!   (a client joins them with `\n`, which restores the payload exactly).
//! - `item-b64`: any other payload, as standard base64 on one `data:` line.
//! - `discontinuity`: `data: {"last_seq":L,"new_seq":N,"new_epoch":E}`.
//! - `heartbeat`: `data: {"epoch":E,"next_seq":N}`.
//! - `error`: `data:` a one-line reason, sent before the server ends the stream.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Appends an item event (to a `BytesMut`, or to a `Vec<u8>` such as a shard's scratch
/// buffer that a shared frame is built in).
pub fn encode_item(out: &mut impl BufMut, epoch: u64, seq: u64, payload: &[u8]) {
    use base64::Engine as _;
    use std::fmt::Write as _;
    let plain = match std::str::from_utf8(payload) {
        Ok(s) if !s.contains('\r') => Some(s),
        _ => None,
    };
    // Writing into a growable buffer cannot fail.
    let _ = writeln!(Writer(out), "id: {epoch}-{seq}");
    match plain {
        Some(text) => {
            out.put_slice(b"event: item\n");
            for line in text.split('\n') {
                out.put_slice(b"data: ");
                out.put_slice(line.as_bytes());
                out.put_u8(b'\n');
            }
        }
        None => {
            out.put_slice(b"event: item-b64\ndata: ");
            out.put_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(payload)
                    .as_bytes(),
            );
            out.put_u8(b'\n');
        }
    }
    out.put_u8(b'\n');
}

/// An item event as a shareable buffer.
pub fn item_to_bytes(epoch: u64, seq: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 64);
    encode_item(&mut out, epoch, seq, payload);
    out.freeze()
}

/// Appends a discontinuity event. Its id is the new position, so a reconnect resumes there.
pub fn encode_discontinuity(out: &mut BytesMut, last_seq: u64, new_seq: u64, new_epoch: u64) {
    use std::fmt::Write as _;
    let _ = write!(
        Writer(out),
        "id: {new_epoch}-{}\nevent: discontinuity\ndata: {{\"last_seq\":{last_seq},\"new_seq\":{new_seq},\"new_epoch\":{new_epoch}}}\n\n",
        new_seq.saturating_sub(1)
    );
}

/// Appends a heartbeat event.
pub fn encode_heartbeat(out: &mut BytesMut, epoch: u64, next_seq: u64) {
    use std::fmt::Write as _;
    let _ = write!(
        Writer(out),
        "event: heartbeat\ndata: {{\"epoch\":{epoch},\"next_seq\":{next_seq}}}\n\n"
    );
}

/// Appends an error event (the reason is cut at its first line break).
pub fn encode_error(out: &mut BytesMut, reason: &str) {
    let line = reason.split(['\r', '\n']).next().unwrap_or("");
    out.put_slice(b"event: error\ndata: ");
    out.put_slice(line.as_bytes());
    out.put_slice(b"\n\n");
}

struct Writer<'a, B: BufMut>(&'a mut B);

impl<B: BufMut> std::fmt::Write for Writer<'_, B> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// A `Last-Event-ID` that is not `<epoch>-<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("Last-Event-ID must be <epoch>-<seq> in decimal, got {0:?}")]
pub struct BadEventId(pub String);

/// Parses `<epoch>-<seq>` (the id of the last event the client saw).
pub fn parse_event_id(s: &str) -> Result<(u64, u64), BadEventId> {
    let bad = || BadEventId(s.chars().take(64).collect());
    let (e, q) = s.trim().split_once('-').ok_or_else(bad)?;
    let digits = |x: &str| !x.is_empty() && x.len() <= 20 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(e) || !digits(q) {
        return Err(bad());
    }
    Ok((e.parse().map_err(|_| bad())?, q.parse().map_err(|_| bad())?))
}

/// A parsed SSE event, for clients and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `id:` if present.
    pub id: Option<String>,
    /// `event:` (default `message`).
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// Parses complete events off the front of `buf` (per the WHATWG event-stream rules used by
/// browsers, restricted to `\n` line ends which is all Fanfare sends). Returns the events
/// and how many bytes they took; a trailing partial event is left for the next call.
pub fn parse_events(buf: &str) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut used = 0;
    while let Some(end) = buf[used..].find("\n\n") {
        let block = &buf[used..used + end];
        used += end + 2;
        let mut ev = Event {
            event: "message".into(),
            ..Event::default()
        };
        let mut data: Vec<&str> = Vec::new();
        let mut any = false;
        for line in block.split('\n') {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            any = true;
            match field {
                "id" => ev.id = Some(value.to_owned()),
                "event" => ev.event = value.to_owned(),
                "data" => data.push(value),
                _ => {}
            }
        }
        if any {
            ev.data = data.join("\n");
            events.push(ev);
        }
    }
    (events, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn item_text_and_binary() {
        let b = item_to_bytes(7, 42, b"hello\nworld");
        assert_eq!(
            &b[..],
            b"id: 7-42\nevent: item\ndata: hello\ndata: world\n\n"
        );
        let b = item_to_bytes(7, 43, &[0xff, 0x00]);
        assert_eq!(&b[..], b"id: 7-43\nevent: item-b64\ndata: /wA=\n\n");
    }

    #[test]
    fn event_ids() {
        assert_eq!(parse_event_id("12-34"), Ok((12, 34)));
        assert_eq!(parse_event_id(" 1-2 "), Ok((1, 2)));
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "99999999999999999999999-1",
            "+1-2",
        ] {
            assert!(parse_event_id(bad).is_err(), "{bad}");
        }
    }

    quickcheck! {
        fn item_round_trips_through_parser(epoch: u64, seq: u64, payload: Vec<u8>) -> bool {
            use base64::Engine as _;
            let b = item_to_bytes(epoch, seq, &payload);
            let text = std::str::from_utf8(&b).unwrap().to_owned();
            let (evs, used) = parse_events(&text);
            let ev = &evs[0];
            let back = match ev.event.as_str() {
                "item" => ev.data.clone().into_bytes(),
                "item-b64" => base64::engine::general_purpose::STANDARD.decode(&ev.data).unwrap(),
                _ => return false,
            };
            evs.len() == 1 && used == text.len() && back == payload
                && parse_event_id(ev.id.as_deref().unwrap()) == Ok((epoch, seq))
        }
    }
}
