//! Answers of the HTTP API: a status, a content type and a body, and the JSON error shape.

use bytes::Bytes;
use fanfare_core::{PublishError, SubscribeError};
use fanfare_proto::message::ErrorCode;

/// A complete HTTP answer, for either HTTP version to write.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Headers beside the content type and length (CORS).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: "text/plain",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A JSON error: `{"error": text}`.
    pub fn error(status: u16, text: &str) -> Self {
        Self::json(status, json_error(text))
    }
}

/// The CORS headers answering a browser page at `origin` (already allowed).
pub(crate) fn cors_headers(origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Access-Control-Allow-Origin", origin.to_owned()),
        ("Vary", "Origin".to_owned()),
    ]
}

/// The answer to an allowed CORS preflight.
pub(crate) fn preflight(origin: &str) -> Reply {
    let mut headers = cors_headers(origin);
    headers.extend([
        (
            "Access-Control-Allow-Methods",
            "GET, POST, OPTIONS".to_owned(),
        ),
        (
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type, Idempotency-Key, Last-Event-ID".to_owned(),
        ),
        ("Access-Control-Max-Age", "600".to_owned()),
    ]);
    Reply {
        status: 204,
        content_type: "text/plain",
        body: Bytes::new(),
        headers,
    }
}

/// `{"error":"..."}` with `text` escaped.
pub(crate) fn json_error(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect();
    format!("{{\"error\":\"{escaped}\"}}")
}

/// The HTTP status for an access-control error code.
pub(crate) fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::Forbidden => 403,
        ErrorCode::RateLimited => 429,
        ErrorCode::Unavailable => 503,
        _ => 401,
    }
}

/// The HTTP status for a refused publish.
pub(crate) fn publish_status(e: &PublishError) -> u16 {
    match e {
        PublishError::InvalidName { .. } => 400,
        PublishError::TooLarge { .. } => 413,
        PublishError::TopicLimit { .. } | PublishError::StorageBacklog { .. } => 429,
        _ => 503,
    }
}

/// The HTTP status for a refused subscription.
pub(crate) fn subscribe_status(e: &SubscribeError) -> u16 {
    match e {
        SubscribeError::InvalidName { .. }
        | SubscribeError::InvalidResume { .. }
        | SubscribeError::PresenceInfoTooLarge { .. } => 400,
        SubscribeError::TopicLimit { .. } | SubscribeError::TooManySubscriptions { .. } => 429,
        _ => 503,
    }
}
