//! The brokers a run talks to: parsed URLs ([`Target`]).

use crate::io::{self, Dialer};
use crate::scenario::{BenchError, Scenario, Transport};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Fanfare,
    Redis,
    Nats,
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) kind: Kind,
    /// WebSocket path (Fanfare).
    pub(crate) path: String,
    /// For HTTP/1.1 and WebSocket (ALPN http/1.1 on TLS), and for HTTP/2 (ALPN h2).
    pub(crate) http1: Dialer,
    pub(crate) h2: Dialer,
}

/// One target per comma-separated URL, all of one kind.
pub(crate) fn targets(s: &Scenario) -> Result<Vec<Target>, BenchError> {
    let ts = s
        .url
        .split(',')
        .map(|u| target(s, u.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if ts.iter().any(|t| t.kind != ts[0].kind) {
        return Err(BenchError::Scenario(
            "several URLs must all be of one broker kind".into(),
        ));
    }
    Ok(ts)
}

pub(crate) fn target(s: &Scenario, url: &str) -> Result<Target, BenchError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| BenchError::Scenario(format!("not a URL: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/v1/ws".to_owned()),
    };
    let (kind, tls) = match scheme {
        "ws" | "http" => (Kind::Fanfare, false),
        "wss" | "https" => (Kind::Fanfare, true),
        "redis" => (Kind::Redis, false),
        "nats" => (Kind::Nats, false),
        other => {
            return Err(BenchError::Scenario(format!(
                "unsupported scheme {other}://: use ws, wss, http, https, redis or nats"
            )))
        }
    };
    if kind != Kind::Fanfare && s.transport != Transport::Ws {
        return Err(BenchError::Scenario(
            "--transport applies to Fanfare targets only".into(),
        ));
    }
    let dialer = |alpn: &[&[u8]]| -> Result<Dialer, BenchError> {
        Ok(Dialer {
            host: host.clone(),
            tls: if tls {
                Some(io::tls_connector(&host, s.ca.as_deref(), s.insecure, alpn)?)
            } else {
                None
            },
        })
    };
    Ok(Target {
        kind,
        path: if path == "/" { "/v1/ws".into() } else { path },
        http1: dialer(&[b"http/1.1"])?,
        h2: dialer(&[b"h2"])?,
    })
}

impl Target {
    /// The wire name of topic `i`.
    pub(crate) fn topic(&self, ns: &str, i: usize) -> String {
        match self.kind {
            Kind::Fanfare => format!("t{i}"),
            Kind::Redis | Kind::Nats => format!("{ns}.t{i}"),
        }
    }
}
