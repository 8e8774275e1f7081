//! WebSocket (RFC 6455), with no I/O.
//!
//! - [`parse_upgrade`] reads an HTTP/1.1 upgrade request; [`accept_response`] and
//!   [`reject_response`] answer it. [`client_request`] and [`parse_client_response`] are the
//!   client side, for Fanfare's own CLI and load generator.
//! - [`Decoder`] turns received bytes into [`Message`]s, enforcing masking, control-frame
//!   rules, fragmentation order, UTF-8 in text messages, close codes and size limits. A
//!   violation is a [`ProtocolError`] that names the close code to send.
//! - [`encode_frame`] writes one frame; a server frame is unmasked, so the same bytes can be
//!   queued on every connection that should receive it ([`encode_server_frame`]).
//!
//! Randomness (client masking keys) is a parameter, like time elsewhere in this crate.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The GUID RFC 6455 appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest header block of an upgrade request or response, in bytes (default 16 KiB).
pub const HEADER_BYTES_MAX_DEFAULT: usize = 16 * 1024;
/// Most header lines in an upgrade request.
pub const HEADERS_MAX: usize = 64;
/// Largest control frame payload (RFC 6455 5.5).
pub const CONTROL_PAYLOAD_MAX: usize = 125;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const FRAME_HEADER_MAX: usize = 14;

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continues a fragmented message.
    Continuation = 0x0,
    /// UTF-8 text.
    Text = 0x1,
    /// Binary data.
    Binary = 0x2,
    /// Close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

impl Opcode {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Close codes Fanfare sends (RFC 6455 7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data of a type the endpoint cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// Data inconsistent with the message type (bad UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// The message breaks policy (bad request, auth, limits other than size).
    pub const POLICY: u16 = 1008;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// Unexpected condition on the server.
    pub const INTERNAL: u16 = 1011;
    /// Try again later (overload).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Is `code` one a peer may send in a close frame (RFC 6455 7.4)?
pub fn close_code_is_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Which end of the connection a [`Decoder`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames from clients.
    Server,
    /// Receives unmasked frames from a server.
    Client,
}

/// Limits a [`Decoder`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame, in bytes.
    pub frame_bytes_max: usize,
    /// Largest message (all fragments together), in bytes.
    pub message_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A 1 MiB payload plus the envelope of a Publish message.
        Self {
            frame_bytes_max: (1 << 20) + 64 * 1024,
            message_bytes_max: (1 << 20) + 64 * 1024,
        }
    }
}

/// A received WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; answer with a pong carrying the same bytes.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame, with its code and reason if it had them.
    Close(Option<(u16, String)>),
}

/// A protocol violation; the connection should be closed with [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A client frame was not masked, or a server frame was.
    #[error("frame masking is wrong for this direction")]
    Masking,
    /// RSV bits set with no extension negotiated.
    #[error("reserved bits set")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode 0x{0:x}")]
    UnknownOpcode(u8),
    /// A control frame over 125 bytes or fragmented.
    #[error("invalid control frame")]
    BadControlFrame,
    /// A continuation with no message started, or a new message while one is unfinished.
    #[error("fragments out of order")]
    BadFragmentation,
    /// A 64-bit length with the top bit set.
    #[error("invalid frame length")]
    BadLength,
    /// A frame over the frame size limit.
    #[error("frame of {len} bytes over the limit of {max}")]
    FrameTooLarge {
        /// Its announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A message over the message size limit.
    #[error("message of {len} bytes over the limit of {max}")]
    MessageTooLarge {
        /// Its length so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text message or close reason that is not UTF-8.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A close frame with a one-byte payload or a code peers may not send.
    #[error("invalid close frame")]
    BadClose,
}

impl ProtocolError {
    /// The close code to answer this violation with.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                close_code::TOO_BIG
            }
            ProtocolError::InvalidUtf8 => close_code::INVALID_DATA,
            _ => close_code::PROTOCOL,
        }
    }
}

/// An incremental frame decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    limits: Limits,
    /// The opcode and gathered payload of an unfinished fragmented message.
    partial: Option<(Opcode, BytesMut)>,
}

struct Header {
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

impl Decoder {
    /// A decoder for `role` with `limits`.
    pub fn new(role: Role, limits: Limits) -> Self {
        Self {
            role,
            limits,
            partial: None,
        }
    }

    /// Whether the decoder holds part of a fragmented message (its first fragments arrived,
    /// its last did not).
    pub fn assembling(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes the next complete message from the front of `buf`, consuming its bytes.
    ///
    /// `Ok(None)` means more bytes are needed (whatever was consumed so far is kept inside
    /// the decoder). Payload bytes are unmasked in place and handed out without copying
    /// when a message is one frame.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some(h) = self.parse_header(buf)? else {
                return Ok(None);
            };
            if buf.len() < h.header_len + h.payload_len {
                return Ok(None);
            }
            buf.advance(h.header_len);
            let mut payload = buf.split_to(h.payload_len);
            if let Some(mask) = h.mask {
                apply_mask(&mut payload, mask);
            }
            if let Some(msg) = self.on_frame(h.fin, h.opcode, payload)? {
                return Ok(Some(msg));
            }
        }
    }

    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(ProtocolError::UnknownOpcode(b0 & 0x0F))?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return Err(ProtocolError::Masking);
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(ProtocolError::BadLength);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode.is_control() && (!fin || len > CONTROL_PAYLOAD_MAX as u64) {
            return Err(ProtocolError::BadControlFrame);
        }
        if len > self.limits.frame_bytes_max as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.limits.frame_bytes_max,
            });
        }
        let mask = if masked {
            if buf.len() < at + 4 {
                return Ok(None);
            }
            let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len: at,
            // `len` is at most frame_bytes_max, a usize.
            payload_len: len as usize,
        }))
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: Opcode,
        payload: BytesMut,
    ) -> Result<Option<Message>, ProtocolError> {
        match opcode {
            Opcode::Ping => Ok(Some(Message::Ping(payload.freeze()))),
            Opcode::Pong => Ok(Some(Message::Pong(payload.freeze()))),
            Opcode::Close => parse_close(&payload).map(|c| Some(Message::Close(c))),
            Opcode::Text | Opcode::Binary => {
                if self.partial.is_some() {
                    return Err(ProtocolError::BadFragmentation);
                }
                self.check_message_len(payload.len())?;
                if fin {
                    finish_message(opcode, payload).map(Some)
                } else {
                    self.partial = Some((opcode, payload));
                    Ok(None)
                }
            }
            Opcode::Continuation => {
                let Some((first, mut gathered)) = self.partial.take() else {
                    return Err(ProtocolError::BadFragmentation);
                };
                self.check_message_len(gathered.len() + payload.len())?;
                gathered.extend_from_slice(&payload);
                if fin {
                    finish_message(first, gathered).map(Some)
                } else {
                    self.partial = Some((first, gathered));
                    Ok(None)
                }
            }
        }
    }

    fn check_message_len(&self, len: usize) -> Result<(), ProtocolError> {
        if len > self.limits.message_bytes_max {
            return Err(ProtocolError::MessageTooLarge {
                len,
                max: self.limits.message_bytes_max,
            });
        }
        Ok(())
    }
}

fn finish_message(opcode: Opcode, payload: BytesMut) -> Result<Message, ProtocolError> {
    if opcode == Opcode::Text {
        std::str::from_utf8(&payload).map_err(|_| ProtocolError::InvalidUtf8)?;
        Ok(Message::Text(payload.freeze()))
    } else {
        Ok(Message::Binary(payload.freeze()))
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::BadClose),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_is_valid(code) {
                return Err(ProtocolError::BadClose);
            }
            let reason =
                std::str::from_utf8(&payload[2..]).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// XORs `data` with the masking key, in place (masking and unmasking are the same).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Writes one frame into `out`. With `mask` (a client's frame) the payload is masked.
pub fn encode_frame(
    out: &mut BytesMut,
    opcode: Opcode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let mut b0 = opcode as u8;
    if fin {
        b0 |= 0x80;
    }
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(FRAME_HEADER_MAX + payload.len());
    out.put_u8(b0);
    match payload.len() {
        n if n < 126 => out.put_u8(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(mask_bit | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(mask_bit | 127);
            out.put_u64(n as u64);
        }
    }
    match mask {
        Some(m) => {
            out.put_slice(&m);
            let start = out.len();
            out.put_slice(payload);
            apply_mask(&mut out[start..], m);
        }
        None => out.put_slice(payload),
    }
}

/// Encodes one unmasked, final server frame as a shareable buffer: one allocation of
/// exactly the frame's size (a buffer with spare capacity would cost `Bytes` a second
/// allocation for its shared header).
pub fn encode_server_frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    encode_server_frame_with(opcode, payload.len(), |out| out.extend_from_slice(payload))
}

/// [`encode_server_frame`] for a payload of `len` bytes that `write` appends to the frame's
/// buffer (an encoder writing in place instead of copying).
pub fn encode_server_frame_with(
    opcode: Opcode,
    len: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Bytes {
    let mut out = Vec::with_capacity(server_header_len(len) + len);
    put_server_frame_with(&mut out, opcode, len, write);
    Bytes::from(out)
}

/// Bytes of a whole server frame (header and payload) for a payload of `len` bytes.
pub fn server_frame_len(len: usize) -> usize {
    server_header_len(len) + len
}

/// Bytes of a server frame's header for a payload of `len` bytes.
fn server_header_len(len: usize) -> usize {
    match len {
        n if n < 126 => 2,
        n if n <= usize::from(u16::MAX) => 4,
        _ => 10,
    }
}

/// Appends one unmasked, final server frame to `out`: its header, then the `len`-byte
/// payload that `write` appends.
pub fn put_server_frame_with(
    out: &mut Vec<u8>,
    opcode: Opcode,
    len: usize,
    write: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.reserve(server_header_len(len) + len);
    out.push(0x80 | opcode as u8);
    match len {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    write(out);
    debug_assert_eq!(
        out.len() - start,
        server_header_len(len) + len,
        "the writer wrote the length it announced"
    );
}

/// Encodes a close frame's payload: code then reason (cut to fit 125 bytes at a char boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(CONTROL_PAYLOAD_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

// ------------------------------------------------------------------ handshake

/// A valid WebSocket upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The request path, without the query.
    pub path: String,
    /// The query string, without `?`, if any.
    pub query: Option<String>,
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// `Origin`, if sent.
    pub origin: Option<String>,
    /// `Host`, if sent.
    pub host: Option<String>,
    /// `Authorization`, if sent.
    pub authorization: Option<String>,
    /// `Sec-WebSocket-Protocol` values, in order.
    pub protocols: Vec<String>,
}

/// Why an upgrade request was refused; [`UpgradeError::status`] is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Not parseable as HTTP/1.1.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// The header block is over the limit.
    #[error("request headers over {0} bytes")]
    HeadersTooLarge(usize),
    /// Not a GET.
    #[error("method must be GET")]
    Method,
    /// Missing `Upgrade: websocket` or `Connection: upgrade`.
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported WebSocket version (13 is required)")]
    Version,
    /// `Sec-WebSocket-Key` missing or not 16 bytes in base64.
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
}

impl UpgradeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeError::HeadersTooLarge(_) => 431,
            UpgradeError::Method => 405,
            UpgradeError::Version => 426,
            _ => 400,
        }
    }
}

/// Parses an upgrade request from the front of `buf`.
///
/// Returns the request and how many bytes it took, or `Ok(None)` when the header block is
/// not complete yet (and not over `header_bytes_max`).
pub fn parse_upgrade(
    buf: &[u8],
    header_bytes_max: usize,
) -> Result<Option<(Upgrade, usize)>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > header_bytes_max {
                return Err(UpgradeError::HeadersTooLarge(header_bytes_max));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpgradeError::HeadersTooLarge(header_bytes_max))
        }
        Err(e) => return Err(UpgradeError::Malformed(e.to_string())),
    };
    if n > header_bytes_max {
        return Err(UpgradeError::HeadersTooLarge(header_bytes_max));
    }
    if req.method != Some("GET") {
        return Err(UpgradeError::Method);
    }
    if req.version != Some(1) {
        return Err(UpgradeError::Malformed("HTTP/1.1 is required".into()));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut up = Upgrade {
        path,
        query,
        key: String::new(),
        origin: None,
        host: None,
        authorization: None,
        protocols: Vec::new(),
    };
    let (mut upgrade_ok, mut connection_ok, mut version_ok) = (false, false, false);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| UpgradeError::Malformed(format!("header {} is not UTF-8", h.name)))?
            .trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ok |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_ok |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_ok = value == "13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            up.key = value.to_owned();
        } else if name.eq_ignore_ascii_case("origin") {
            up.origin = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("host") {
            up.host = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            up.authorization = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            up.protocols.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    if !upgrade_ok || !connection_ok {
        return Err(UpgradeError::NotUpgrade);
    }
    if !version_ok {
        return Err(UpgradeError::Version);
    }
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(&up.key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(UpgradeError::Key),
    }
    Ok(Some((up, n)))
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// The `101 Switching Protocols` answer, optionally choosing a subprotocol.
pub fn accept_response(key: &str, protocol: Option<&str>) -> String {
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if let Some(p) = protocol {
        r.push_str("Sec-WebSocket-Protocol: ");
        r.push_str(p);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// A plain HTTP error answer that closes the connection.
pub fn reject_response(status: u16, reason: &str) -> String {
    let phrase = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let extra = if status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {phrase}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    )
}

/// A client's upgrade request for `path` on `host`, with a 16-byte `nonce` as its key.
pub fn client_request(
    host: &str,
    path: &str,
    nonce: [u8; 16],
    extra_headers: &[(&str, &str)],
) -> (String, String) {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (n, v) in extra_headers {
        r.push_str(n);
        r.push_str(": ");
        r.push_str(v);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    (r, key)
}

/// Why a server refused a client's upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The response was not HTTP.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The server answered with another status.
    #[error("server answered {0}")]
    Status(u16),
    /// `Sec-WebSocket-Accept` did not match the key.
    #[error("wrong Sec-WebSocket-Accept")]
    Accept,
}

/// Parses a server's answer to [`client_request`]; `Ok(Some(n))` is the response length.
pub fn parse_client_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= HEADER_BYTES_MAX_DEFAULT => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(HandshakeError::Malformed(
                "response headers too large".into(),
            ))
        }
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::Status(code));
    }
    let want = accept_key(key);
    let ok = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == want.as_bytes());
    if !ok {
        return Err(HandshakeError::Accept);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Decoder {
        Decoder::new(Role::Server, Limits::default())
    }

    #[test]
    fn a_server_frame_is_the_general_encoding_at_every_length_boundary() {
        for n in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut general = BytesMut::new();
            encode_frame(&mut general, Opcode::Binary, true, &payload, None);
            assert_eq!(
                encode_server_frame(Opcode::Binary, &payload),
                general.freeze(),
                "{n}"
            );
        }
    }

    fn client_frame(opcode: Opcode, fin: bool, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        encode_frame(&mut b, opcode, fin, payload, Some([1, 2, 3, 4]));
        b
    }

    #[test]
    fn rfc_example_accept_key() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 section 5.7: a masked "Hello".
        let mut b = BytesMut::from(
            &[
                0x81u8, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ][..],
        );
        let m = server().decode(&mut b).unwrap();
        assert_eq!(m, Some(Message::Text(Bytes::from_static(b"Hello"))));
        assert!(b.is_empty());
    }

    #[test]
    fn rfc_example_fragmented() {
        let mut b = client_frame(Opcode::Text, false, b"Hel");
        b.extend_from_slice(&client_frame(Opcode::Ping, true, b"p"));
        b.extend_from_slice(&client_frame(Opcode::Continuation, true, b"lo"));
        let mut d = server();
        assert_eq!(
            d.decode(&mut b).unwrap(),
            Some(Message::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            d.decode(&mut b).unwrap(),
            Some(Message::Text(Bytes::from_static(b"Hello")))
        );
        assert_eq!(d.decode(&mut b).unwrap(), None);
    }

    #[test]
    fn violations_give_close_codes() {
        let cases: Vec<(BytesMut, u16)> = vec![
            (
                {
                    let mut b = BytesMut::new();
                    encode_frame(&mut b, Opcode::Binary, true, b"x", None);
                    b
                },
                1002,
            ),
            (BytesMut::from(&[0x83u8, 0x80, 0, 0, 0, 0][..]), 1002),
            (BytesMut::from(&[0xC2u8, 0x80, 0, 0, 0, 0][..]), 1002),
            (client_frame(Opcode::Ping, false, b""), 1002),
            (client_frame(Opcode::Ping, true, &[0u8; 126]), 1002),
            (client_frame(Opcode::Continuation, true, b"x"), 1002),
            (client_frame(Opcode::Text, true, &[0xff, 0xfe]), 1007),
            (client_frame(Opcode::Close, true, &[3]), 1002),
            (client_frame(Opcode::Close, true, &[0x03, 0xED]), 1002),
            (
                BytesMut::from(&[0x82u8, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0][..]),
                1002,
            ),
        ];
        for (i, (mut b, code)) in cases.into_iter().enumerate() {
            let err = server().decode(&mut b).expect_err(&format!("case {i}"));
            assert_eq!(err.close_code(), code, "case {i}: {err}");
        }
        let mut d = Decoder::new(
            Role::Server,
            Limits {
                frame_bytes_max: 10,
                message_bytes_max: 15,
            },
        );
        let mut b = client_frame(Opcode::Binary, true, &[0u8; 11]);
        assert_eq!(d.decode(&mut b).unwrap_err().close_code(), 1009);
        let mut b = client_frame(Opcode::Binary, false, &[0u8; 10]);
        b.extend_from_slice(&client_frame(Opcode::Continuation, true, &[0u8; 10]));
        let mut d = Decoder::new(
            Role::Server,
            Limits {
                frame_bytes_max: 10,
                message_bytes_max: 15,
            },
        );
        assert_eq!(d.decode(&mut b).unwrap_err().close_code(), 1009);
    }

    #[test]
    fn new_message_inside_fragmented_one_is_an_error() {
        let mut b = client_frame(Opcode::Binary, false, b"a");
        b.extend_from_slice(&client_frame(Opcode::Binary, true, b"b"));
        assert_eq!(
            server().decode(&mut b),
            Err(ProtocolError::BadFragmentation)
        );
    }

    #[test]
    fn close_frames() {
        let mut b = client_frame(Opcode::Close, true, &close_payload(1000, "bye"));
        assert_eq!(
            server().decode(&mut b).unwrap(),
            Some(Message::Close(Some((1000, "bye".into()))))
        );
        let mut b = client_frame(Opcode::Close, true, b"");
        assert_eq!(server().decode(&mut b).unwrap(), Some(Message::Close(None)));
        assert_eq!(close_payload(1000, &"é".repeat(100)).len(), 2 + 122);
    }

    #[test]
    fn upgrade_parse_and_errors() {
        let req = "GET /v1/ws?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://a.example\r\n\r\nrest";
        let (up, n) = parse_upgrade(req.as_bytes(), 16384).unwrap().unwrap();
        assert_eq!(n, req.len() - 4);
        assert_eq!(up.path, "/v1/ws");
        assert_eq!(up.query.as_deref(), Some("token=abc"));
        assert_eq!(up.origin.as_deref(), Some("https://a.example"));
        assert_eq!(parse_upgrade(&req.as_bytes()[..30], 16384), Ok(None));
        let bad_version = req.replace("Version: 13", "Version: 8");
        assert_eq!(
            parse_upgrade(bad_version.as_bytes(), 16384)
                .unwrap_err()
                .status(),
            426
        );
        let post = req.replace("GET", "POST");
        assert_eq!(
            parse_upgrade(post.as_bytes(), 16384).unwrap_err().status(),
            405
        );
        let no_upgrade = req.replace("Upgrade: websocket\r\n", "");
        assert_eq!(
            parse_upgrade(no_upgrade.as_bytes(), 16384).unwrap_err(),
            UpgradeError::NotUpgrade
        );
        let bad_key = req.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
        assert_eq!(
            parse_upgrade(bad_key.as_bytes(), 16384).unwrap_err(),
            UpgradeError::Key
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20000));
        assert_eq!(
            parse_upgrade(huge.as_bytes(), 16384).unwrap_err().status(),
            431
        );
    }

    #[test]
    fn client_handshake_round_trip() {
        let (req, key) = client_request("h", "/v1/ws", [7; 16], &[("Origin", "o")]);
        let (up, _) = parse_upgrade(req.as_bytes(), 16384).unwrap().unwrap();
        assert_eq!(up.key, key);
        let resp = accept_response(&up.key, None);
        assert_eq!(
            parse_client_response(resp.as_bytes(), &key),
            Ok(Some(resp.len()))
        );
        assert_eq!(
            parse_client_response(resp.as_bytes(), "other"),
            Err(HandshakeError::Accept)
        );
    }

    #[test]
    fn mask_round_trip_all_lengths() {
        for n in 0..20 {
            let orig: Vec<u8> = (0..n as u8).collect();
            let mut d = orig.clone();
            apply_mask(&mut d, [9, 8, 7, 6]);
            for (i, b) in d.iter().enumerate() {
                assert_eq!(*b, orig[i] ^ [9, 8, 7, 6][i % 4]);
            }
            apply_mask(&mut d, [9, 8, 7, 6]);
            assert_eq!(d, orig);
        }
    }
}
