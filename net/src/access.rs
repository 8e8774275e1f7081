//! Access control at request time: authenticate a presented token (with the per-IP failure
//! limit) and check a grant against a topic. The one authorize step every transport uses.

use std::sync::Arc;
use std::time::Instant;

use fanfare_proto::message::ErrorCode;

use crate::auth::{AuthError, Grant, Right};
use crate::ctx::NetCtx;
use crate::metrics;

/// Why a request was not authenticated.
#[derive(Debug)]
pub(crate) enum Denied {
    /// The client's IP is over its failure budget; the token was not looked at.
    RateLimited,
    /// The token was missing or refused.
    Failed(AuthError),
}

impl Denied {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Denied::RateLimited => 429,
            Denied::Failed(_) => 401,
        }
    }

    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Denied::RateLimited => ErrorCode::RateLimited,
            Denied::Failed(e) => e.code(),
        }
    }

    /// A human-readable reason.
    pub fn text(&self) -> String {
        match self {
            Denied::RateLimited => {
                "too many failed authentications from this address; retry later".into()
            }
            Denied::Failed(e) => e.to_string(),
        }
    }
}

/// Checks the token a client presented (authentication on). A refusal is counted, logged
/// once and answered only after the failure delay; an IP over its failure budget is refused
/// at once, without looking at the token.
pub(crate) async fn authenticate(
    ctx: &NetCtx,
    peer: std::net::IpAddr,
    token: Option<&str>,
) -> Result<Arc<Grant>, Denied> {
    let now = Instant::now();
    if ctx.limiter.borrow().blocked(peer, now) {
        metrics::inc(&ctx.stats.auth_rate_limited);
        return Err(Denied::RateLimited);
    }
    let r = match token {
        None => Err(AuthError::Missing),
        Some(t) => ctx.auth.verifier.verify(t),
    };
    match r {
        Ok(g) => {
            metrics::inc(&ctx.stats.auth_ok);
            Ok(Arc::new(g))
        }
        Err(e) => {
            metrics::inc(match e {
                AuthError::Missing => &ctx.stats.auth_failures_missing,
                AuthError::Expired | AuthError::NotYetValid => &ctx.stats.auth_failures_expired,
                _ => &ctx.stats.auth_failures_invalid,
            });
            {
                let mut l = ctx.limiter.borrow_mut();
                l.record(peer, now);
                metrics::set(&ctx.stats.auth_tracked_ips, l.len() as u64);
            }
            tracing::info!(peer = %peer, reason = %e, "authentication failed");
            glommio::timer::sleep(ctx.auth.cfg.failure_delay).await;
            Err(Denied::Failed(e))
        }
    }
}

/// Whether `grant` (None: authentication is off) allows `right` on `ns/topic`.
pub(crate) fn permits(
    ctx: &NetCtx,
    grant: Option<&Grant>,
    ns: &str,
    topic: &str,
    right: Right,
) -> Result<(), (ErrorCode, String)> {
    if !ctx.router_role {
        return Err((
            ErrorCode::Unavailable,
            "this node has only the storage role: publish and subscribe through a router".into(),
        ));
    }
    if !ctx.auth_on() {
        return Ok(());
    }
    let Some(g) = grant else {
        return Err((ErrorCode::Unauthorized, "authenticate first".into()));
    };
    if g.allows(ns, topic, right) {
        return Ok(());
    }
    metrics::inc(&ctx.stats.auth_forbidden);
    Err((
        ErrorCode::Forbidden,
        format!(
            "the token of {} does not grant {right} on {ns}/{topic}",
            g.subject
        ),
    ))
}
