//! Access control: signed tokens, permissions, origin checks and the per-IP limit on failed
//! authentication (docs/operations.md, "Access control").
//!
//! Tokens are JWTs (RFC 7519) signed with Ed25519 (`EdDSA`) or HMAC-SHA256 (`HS256`); every
//! other algorithm, `none` included, is refused. The header names the key (`kid`); several
//! verification keys can be active at once, which is how keys rotate. Claims:
//!
//! | claim | meaning |
//! |---|---|
//! | `sub` | the subject, stamped on every item its holder publishes as `publisher_id` (required) |
//! | `exp` | expiry, Unix seconds (required) |
//! | `nbf`, `iat` | not before / issued at, Unix seconds (optional) |
//! | `jti` | token id, for logs (optional) |
//! | `perms` | `[{"ns": pattern, "topic": pattern, "rights": ["publish", "subscribe", "presence"]}]` (`presence`: read member lists and get join/leave events; not implied by `subscribe`) |
//! | `admin` | `true` grants the admin endpoints |
//!
//! A pattern is `*` (any name), `prefix*` (names starting with `prefix`) or an exact name.
//! Nothing is allowed unless a permission grants it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest subject (`sub`) in bytes; it travels on every item as `publisher_id`.
pub const SUBJECT_BYTES_MAX: usize = 128;
/// Most permissions one token may carry.
pub const PERMISSIONS_MAX: usize = 64;

/// The signature algorithms Fanfare accepts. There is no way to accept `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 signatures: routers hold only public keys.
    EdDSA,
    /// HMAC-SHA256 with a shared secret of at least 32 bytes.
    HS256,
}

impl Algorithm {
    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "EdDSA" => Ok(Algorithm::EdDSA),
            "HS256" => Ok(Algorithm::HS256),
            other => Err(format!(
                "unsupported algorithm {other:?}: use EdDSA or HS256"
            )),
        }
    }
}

/// One key: it verifies tokens whose header names its `kid`, and, when it holds the private
/// half, signs new ones (`fanfare token create`).
#[derive(Clone)]
pub struct Key {
    /// Key id, matched against the token header's `kid`.
    pub kid: String,
    /// The algorithm this key is for.
    pub alg: Algorithm,
    /// EdDSA: the 32-byte public key. HS256: the secret.
    pub verify: Vec<u8>,
    /// EdDSA: the PKCS#8 private key. HS256: the secret. Only needed to sign.
    pub sign: Option<Vec<u8>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("can_sign", &self.sign.is_some())
            .finish()
    }
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|e| format!("{what} is not base64: {e}"))
}

impl Key {
    /// An Ed25519 key from base64: the raw 32-byte public key and, optionally, the PKCS#8
    /// private key (checked to belong to the public key).
    pub fn eddsa(kid: &str, public_b64: &str, private_b64: Option<&str>) -> Result<Self, String> {
        let verify = b64(public_b64, "public_key")?;
        if verify.len() != 32 {
            return Err(format!(
                "key {kid}: an Ed25519 public key is 32 bytes, got {}",
                verify.len()
            ));
        }
        let sign = match private_b64 {
            Some(p) => {
                let der = b64(p, "private_key")?;
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map_err(|e| format!("key {kid}: private_key is not Ed25519 PKCS#8: {e}"))?;
                use ring::signature::KeyPair as _;
                if pair.public_key().as_ref() != verify.as_slice() {
                    return Err(format!(
                        "key {kid}: private_key does not belong to public_key"
                    ));
                }
                Some(der)
            }
            None => None,
        };
        Self::checked_kid(kid)?;
        Ok(Self {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            verify,
            sign,
        })
    }

    /// An HMAC-SHA256 key from a base64 secret of at least 32 bytes.
    pub fn hs256(kid: &str, secret_b64: &str) -> Result<Self, String> {
        let secret = b64(secret_b64, "secret")?;
        if secret.len() < 32 {
            return Err(format!(
                "key {kid}: an HS256 secret needs at least 32 bytes, got {}",
                secret.len()
            ));
        }
        Self::checked_kid(kid)?;
        Ok(Self {
            kid: kid.to_owned(),
            alg: Algorithm::HS256,
            verify: secret.clone(),
            sign: Some(secret),
        })
    }

    fn checked_kid(kid: &str) -> Result<(), String> {
        if kid.is_empty() || kid.len() > 64 || kid.chars().any(|c| c.is_control()) {
            return Err(format!(
                "key id {kid:?} must be 1 to 64 printable characters"
            ));
        }
        Ok(())
    }

    /// Makes a new key. EdDSA: a fresh Ed25519 pair; HS256: a 32-byte random secret.
    pub fn generate(kid: &str, alg: Algorithm) -> Result<Self, String> {
        use ring::rand::SecureRandom as _;
        let rng = ring::rand::SystemRandom::new();
        let e = base64::engine::general_purpose::STANDARD;
        match alg {
            Algorithm::EdDSA => {
                let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| "the system random source failed".to_owned())?;
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref())
                    .map_err(|e| format!("generated key unusable: {e}"))?;
                use ring::signature::KeyPair as _;
                Self::eddsa(
                    kid,
                    &e.encode(pair.public_key().as_ref()),
                    Some(&e.encode(der.as_ref())),
                )
            }
            Algorithm::HS256 => {
                let mut secret = [0u8; 32];
                rng.fill(&mut secret)
                    .map_err(|_| "the system random source failed".to_owned())?;
                Self::hs256(kid, &e.encode(secret))
            }
        }
    }

    /// The key as a `[[auth.keys]]` TOML entry (with its private half when it has one).
    pub fn to_toml(&self) -> String {
        let e = base64::engine::general_purpose::STANDARD;
        match self.alg {
            Algorithm::EdDSA => {
                let mut s = format!(
                    "[[auth.keys]]\nkid = \"{}\"\nalg = \"EdDSA\"\npublic_key = \"{}\"\n",
                    self.kid,
                    e.encode(&self.verify)
                );
                if let Some(p) = &self.sign {
                    s.push_str(&format!(
                        "# Only on machines that mint tokens (`fanfare token create`):\nprivate_key = \"{}\"\n",
                        e.encode(p)
                    ));
                }
                s
            }
            Algorithm::HS256 => format!(
                "[[auth.keys]]\nkid = \"{}\"\nalg = \"HS256\"\nsecret = \"{}\"\n",
                self.kid,
                e.encode(&self.verify)
            ),
        }
    }
}

/// A permission as it is written in a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionClaim {
    /// Namespace pattern.
    pub ns: String,
    /// Topic pattern.
    pub topic: String,
    /// Any of `publish`, `subscribe` and `presence`.
    pub rights: Vec<String>,
}

/// A token's claims, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: stamped on published items as `publisher_id`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Token id (appears in logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Permissions.
    #[serde(default)]
    pub perms: Vec<PermissionClaim>,
    /// Grants the admin endpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// What a permission grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Publishing to a topic.
    Publish,
    /// Subscribing to a topic.
    Subscribe,
    /// Reading a topic's member list and receiving its join and leave events.
    Presence,
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Right::Publish => "publish",
            Right::Subscribe => "subscribe",
            Right::Presence => "presence",
        })
    }
}

/// A name pattern: `*`, `prefix*` or an exact name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Every name.
    Any,
    /// Names starting with this (maybe empty is excluded: that is `Any`).
    Prefix(String),
    /// This name only.
    Exact(String),
}

impl Pattern {
    /// Parses a pattern: name bytes (`[A-Za-z0-9._-]`) with at most one `*`, at the end.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Pattern::Any);
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        if body.is_empty() {
            return Err("empty pattern".into());
        }
        if body.len() > fanfare_proto::names::NAME_BYTES_MAX {
            return Err(format!("pattern {s:?} is longer than a name can be"));
        }
        if let Some(b) = body
            .bytes()
            .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return Err(format!(
                "pattern {s:?} has {:?}: use name characters and one trailing *",
                b as char
            ));
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_owned())
        } else {
            Pattern::Exact(body.to_owned())
        })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Exact(e) => name == e,
        }
    }
}

/// One checked permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// Namespace pattern.
    pub ns: Pattern,
    /// Topic pattern.
    pub topic: Pattern,
    /// Grants publishing.
    pub publish: bool,
    /// Grants subscribing.
    pub subscribe: bool,
    /// Grants reading member lists and join/leave events.
    pub presence: bool,
}

/// What a verified token allows.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's subject.
    pub subject: Arc<str>,
    /// The token's id, if any.
    pub token_id: Option<String>,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
    /// Grants the admin endpoints.
    pub admin: bool,
    /// The permissions.
    pub perms: Vec<Permission>,
}

impl Grant {
    /// Whether the grant allows `right` on `ns/topic` (deny by default).
    pub fn allows(&self, ns: &str, topic: &str, right: Right) -> bool {
        self.perms.iter().any(|p| {
            (match right {
                Right::Publish => p.publish,
                Right::Subscribe => p.subscribe,
                Right::Presence => p.presence,
            }) && p.ns.matches(ns)
                && p.topic.matches(topic)
        })
    }

    /// Time until expiry from now (zero when already expired).
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(unix_now()))
    }

    fn from_claims(c: Claims) -> Result<Self, AuthError> {
        let bad = AuthError::BadClaims;
        if c.sub.is_empty() || c.sub.len() > SUBJECT_BYTES_MAX {
            return Err(bad(format!("sub must be 1 to {SUBJECT_BYTES_MAX} bytes")));
        }
        if c.perms.len() > PERMISSIONS_MAX {
            return Err(bad(format!("more than {PERMISSIONS_MAX} permissions")));
        }
        let mut perms = Vec::with_capacity(c.perms.len());
        for p in c.perms {
            let (mut publish, mut subscribe, mut presence) = (false, false, false);
            for r in &p.rights {
                match r.as_str() {
                    "publish" => publish = true,
                    "subscribe" => subscribe = true,
                    "presence" => presence = true,
                    other => return Err(bad(format!("unknown right {other:?}"))),
                }
            }
            perms.push(Permission {
                ns: Pattern::parse(&p.ns).map_err(|e| bad(format!("ns: {e}")))?,
                topic: Pattern::parse(&p.topic).map_err(|e| bad(format!("topic: {e}")))?,
                publish,
                subscribe,
                presence,
            });
        }
        Ok(Self {
            subject: Arc::from(c.sub.as_str()),
            token_id: c.jti,
            expires_at: c.exp,
            admin: c.admin,
            perms,
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented.
    #[error("a token is required")]
    Missing,
    /// Not a JWT.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm Fanfare does not accept (`none` included).
    #[error("token algorithm {0:?} is not accepted (EdDSA, HS256)")]
    UnsupportedAlgorithm(String),
    /// The header's algorithm is not the algorithm of the key it names.
    #[error("token algorithm does not match key {0}")]
    WrongAlgorithm(String),
    /// No active key has this id.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The header names no key (`kid`): every token must say which key signed it.
    #[error("the token names no key (kid)")]
    MissingKeyId,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf`.
    #[error("token not valid yet")]
    NotYetValid,
    /// The claims are not what Fanfare needs.
    #[error("invalid token claims: {0}")]
    BadClaims(String),
}

impl AuthError {
    /// The wire error code.
    pub fn code(&self) -> fanfare_proto::message::ErrorCode {
        use fanfare_proto::message::ErrorCode;
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs `claims` with `key` (which must hold its private half).
pub fn mint(key: &Key, claims: &Claims) -> Result<String, String> {
    let secret = key
        .sign
        .as_ref()
        .ok_or_else(|| format!("key {} has no private_key to sign with", key.kid))?;
    let enc = match key.alg {
        Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_der(secret),
        Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(secret),
    };
    let mut header = jsonwebtoken::Header::new(key.alg.jwt());
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &enc).map_err(|e| format!("cannot sign: {e}"))
}

/// Verifies tokens against the active keys.
pub struct Verifier {
    keys: HashMap<String, (Algorithm, jsonwebtoken::DecodingKey)>,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Verifier").field("kids", &kids).finish()
    }
}

impl Verifier {
    /// A verifier over `keys`, tolerating `leeway` of clock skew on `exp` and `nbf`.
    /// Fails on duplicate key ids.
    pub fn new(keys: &[Key], leeway: Duration) -> Result<Self, String> {
        let mut map = HashMap::new();
        for k in keys {
            let dec = match k.alg {
                Algorithm::EdDSA => jsonwebtoken::DecodingKey::from_ed_der(&k.verify),
                Algorithm::HS256 => jsonwebtoken::DecodingKey::from_secret(&k.verify),
            };
            if map.insert(k.kid.clone(), (k.alg, dec)).is_some() {
                return Err(format!("two keys have the id {:?}", k.kid));
            }
        }
        Ok(Self {
            keys: map,
            leeway: leeway.as_secs(),
        })
    }

    /// Whether any key is configured (authentication is on).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies a token: accepted algorithm, a key id (`kid`, required) naming an active key,
    /// signature, `exp` (required), `nbf`, and well-formed claims.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        if token.len() > fanfare_proto::message::TOKEN_BYTES_MAX {
            return Err(AuthError::Malformed);
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return Err(header_error(token)),
        };
        if !matches!(
            header.alg,
            jsonwebtoken::Algorithm::EdDSA | jsonwebtoken::Algorithm::HS256
        ) {
            return Err(AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.clone().ok_or(AuthError::MissingKeyId)?;
        let (alg, key) = self
            .keys
            .get(&kid)
            .ok_or_else(|| AuthError::UnknownKey(kid.clone()))?;
        if header.alg != alg.jwt() {
            return Err(AuthError::WrongAlgorithm(kid));
        }
        let mut v = jsonwebtoken::Validation::new(alg.jwt());
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm(kid.clone()),
            ErrorKind::MissingRequiredClaim(c) => AuthError::BadClaims(format!("missing {c}")),
            ErrorKind::Json(e) => AuthError::BadClaims(e.to_string()),
            _ => AuthError::Malformed,
        })?;
        Grant::from_claims(data.claims)
    }
}

/// Names the problem with a header `jsonwebtoken` could not read: an algorithm we do not
/// accept (`none`, RS256, ...) reads better than "malformed".
fn header_error(token: &str) -> AuthError {
    #[derive(Deserialize)]
    struct Alg {
        alg: String,
    }
    let first = token.split('.').next().unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first)
        .ok()
        .and_then(|b| serde_json::from_slice::<Alg>(&b).ok())
        .map_or(AuthError::Malformed, |a| {
            AuthError::UnsupportedAlgorithm(a.alg)
        })
}

/// Access-control settings of a node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Verification keys. None (the default): authentication is off and every request is
    /// allowed. Any: every publish, subscribe and admin request needs a valid token.
    pub keys: Vec<Key>,
    /// WebSocket `Origin`s allowed to connect (exact, case-insensitive, e.g.
    /// `https://app.example.com`; `*` allows all). Empty (the default) allows every origin.
    /// Requests without `Origin` (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// A failed authentication is answered after this delay.
    pub failure_delay: Duration,
    /// Failed authentications one IP (IPv6: one /64) may have per `failure_window` on one
    /// shard; past it, its requests are refused (429, `RateLimited`) without checking tokens
    /// until the window ends.
    pub failures_per_ip_max: u32,
    /// The window of `failures_per_ip_max`.
    pub failure_window: Duration,
    /// IPs whose failures one shard remembers; past it, expired entries are dropped, then
    /// the oldest.
    pub tracked_ips_max: usize,
    /// After a connection's token expires it gets a `TokenExpired` event and this long to
    /// refresh before it is closed.
    pub expiry_grace: Duration,
    /// Clock skew tolerated on `exp` and `nbf` when verifying.
    pub leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            allowed_origins: Vec::new(),
            failure_delay: Duration::from_millis(250),
            failures_per_ip_max: 20,
            failure_window: Duration::from_secs(60),
            tracked_ips_max: 100_000,
            expiry_grace: Duration::from_secs(30),
            leeway: Duration::from_secs(5),
        }
    }
}

/// A node's access control: the settings and the verifier built from them (shared by all
/// shards, read-only).
#[derive(Debug)]
pub struct Auth {
    /// The settings.
    pub cfg: AuthConfig,
    /// The verifier over `cfg.keys`.
    pub verifier: Verifier,
}

impl Auth {
    /// Builds the verifier; fails on unusable keys.
    pub fn new(cfg: AuthConfig) -> Result<Self, String> {
        let verifier = Verifier::new(&cfg.keys, cfg.leeway)?;
        Ok(Self { cfg, verifier })
    }

    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        self.verifier.enabled()
    }

    /// Whether a request from a browser page at `origin` may proceed; `host` is the request's
    /// `Host` (the node as the page reached it). No `Origin`: not a cross-origin browser
    /// request, always allowed. With `allowed_origins` set: exactly those (`*`: any). Unset:
    /// any origin when authentication is on (every request needs a token anyway); with
    /// authentication off, only the node's own origin and pages on this machine (`localhost`,
    /// `127.0.0.1`, `[::1]`), so a page on the web cannot drive a broker it can reach.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin.map(str::trim) else {
            return true;
        };
        let allowed = &self.cfg.allowed_origins;
        if !allowed.is_empty() {
            return allowed
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(origin));
        }
        if self.enabled() {
            return true;
        }
        // "scheme://host[:port]"; anything else (`null` included) is no page of ours.
        let Some((_, authority)) = origin.split_once("://") else {
            return false;
        };
        if host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority)) {
            return true;
        }
        let name = match authority.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(rest, |(h, _)| h),
            None => authority.split(':').next().unwrap_or(authority),
        };
        name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
    }
}

/// The token in an `Authorization: Bearer` value or a `token=` query parameter (the header
/// wins).
pub fn token_from(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    if let Some(a) = authorization {
        let a = a.trim();
        if a.len() > 7 && a[..7].eq_ignore_ascii_case("bearer ") {
            return Some(a[7..].trim().to_owned());
        }
    }
    fanfare_proto::http::query_param(query, "token").map(fanfare_proto::http::percent_decode)
}

/// Per-shard memory of failed authentications by IP (shared-nothing: each shard limits the
/// connections it accepted; see `AuthConfig::failures_per_ip_max`).
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    by_ip: AHashMap<IpAddr, (Instant, u32)>,
    max: u32,
    window: Duration,
    ips_max: usize,
}

/// The address failures are counted under: IPv4 as is, IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

impl FailureLimiter {
    pub(crate) fn new(cfg: &AuthConfig) -> Self {
        Self {
            by_ip: AHashMap::new(),
            max: cfg.failures_per_ip_max,
            window: cfg.failure_window,
            ips_max: cfg.tracked_ips_max.max(1),
        }
    }

    /// Whether `ip` is over its failure budget now.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_ip
            .get(&bucket(ip))
            .is_some_and(|(start, n)| *n >= self.max && now.duration_since(*start) < self.window)
    }

    /// Records a failure from `ip`.
    pub(crate) fn record(&mut self, ip: IpAddr, now: Instant) {
        let ip = bucket(ip);
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= self.ips_max {
            let window = self.window;
            self.by_ip
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            if self.by_ip.len() >= self.ips_max {
                if let Some(oldest) = self
                    .by_ip
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| *k)
                {
                    self.by_ip.remove(&oldest);
                }
            }
        }
        let e = self.by_ip.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// IPs remembered now.
    pub(crate) fn len(&self) -> usize {
        self.by_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            nbf: None,
            iat: None,
            jti: Some("t1".into()),
            perms: vec![PermissionClaim {
                ns: "chat".into(),
                topic: "room-*".into(),
                rights: vec!["subscribe".into()],
            }],
            admin: false,
        }
    }

    #[test]
    fn eddsa_round_trip_and_refusals() {
        let k = Key::generate("k1", Algorithm::EdDSA).unwrap();
        let v = Verifier::new(std::slice::from_ref(&k), Duration::ZERO).unwrap();
        let t = mint(&k, &claims(unix_now() + 60)).unwrap();
        let g = v.verify(&t).unwrap();
        assert_eq!(&*g.subject, "alice");
        assert!(g.allows("chat", "room-1", Right::Subscribe));
        assert!(!g.allows("chat", "room-1", Right::Publish));
        assert!(!g.allows("chat", "lobby", Right::Subscribe));
        assert!(!g.allows("other", "room-1", Right::Subscribe));
        // Another key with the same id: bad signature.
        let k2 = Key::generate("k1", Algorithm::EdDSA).unwrap();
        let t2 = mint(&k2, &claims(unix_now() + 60)).unwrap();
        assert_eq!(v.verify(&t2).unwrap_err(), AuthError::BadSignature);
        // Expired.
        let t3 = mint(&k, &claims(unix_now() - 10)).unwrap();
        assert_eq!(v.verify(&t3).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn none_and_foreign_algorithms_are_refused() {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let body = e.encode(serde_json::to_vec(&claims(unix_now() + 60)).unwrap());
        let k = Key::generate("k1", Algorithm::EdDSA).unwrap();
        let v = Verifier::new(&[k], Duration::ZERO).unwrap();
        for alg in ["none", "None", "RS256"] {
            let h = e.encode(format!("{{\"alg\":\"{alg}\",\"kid\":\"k1\"}}"));
            let t = format!("{h}.{body}.");
            assert_eq!(
                v.verify(&t).unwrap_err(),
                AuthError::UnsupportedAlgorithm(alg.into()),
                "{alg}"
            );
        }
        assert_eq!(v.verify("garbage").unwrap_err(), AuthError::Malformed);
    }

    /// Regression: with a single key configured, a token without `kid` used to be accepted
    /// (checked against that key) although tokens must name their key.
    #[test]
    fn a_token_without_kid_is_refused_even_with_one_key() {
        let k = Key::generate("k1", Algorithm::HS256).unwrap();
        let v = Verifier::new(std::slice::from_ref(&k), Duration::ZERO).unwrap();
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let enc = jsonwebtoken::EncodingKey::from_secret(k.sign.as_deref().unwrap());
        let t = jsonwebtoken::encode(&header, &claims(unix_now() + 60), &enc).unwrap();
        assert_eq!(v.verify(&t).unwrap_err(), AuthError::MissingKeyId);
        // The same claims with the key named are accepted.
        assert!(v
            .verify(&mint(&k, &claims(unix_now() + 60)).unwrap())
            .is_ok());
    }

    #[test]
    fn limiter_blocks_after_budget_and_forgets_after_window() {
        let cfg = AuthConfig {
            failures_per_ip_max: 3,
            failure_window: Duration::from_secs(10),
            tracked_ips_max: 2,
            ..AuthConfig::default()
        };
        let mut l = FailureLimiter::new(&cfg);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!l.blocked(ip, t0));
            l.record(ip, t0);
        }
        assert!(l.blocked(ip, t0));
        assert!(!l.blocked(ip, t0 + Duration::from_secs(11)));
        // IPv6 addresses of one /64 share a budget.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..3 {
            l.record(a, t0);
        }
        assert!(l.blocked(b, t0));
        // Bounded: a third IP evicts the oldest entry.
        l.record("10.0.0.9".parse().unwrap(), t0 + Duration::from_secs(1));
        assert_eq!(l.len(), 2);
    }

    /// The reference: a textbook glob matcher where `*` matches any run of bytes.
    fn glob(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| glob(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && glob(rest, &n[1..]),
        }
    }

    #[derive(Clone, Debug)]
    struct Case {
        pat: String,
        name: String,
    }

    impl quickcheck::Arbitrary for Case {
        fn arbitrary(g: &mut quickcheck::Gen) -> Self {
            let mut word = |alphabet: &[char]| -> String {
                let len = usize::arbitrary(g) % 6;
                (0..len).map(|_| *g.choose(alphabet).unwrap()).collect()
            };
            Case {
                pat: word(&['a', 'b', '-', '.', '*']),
                name: word(&['a', 'b', '-', '.']),
            }
        }
    }

    #[test]
    fn patterns_match_like_a_glob_with_one_trailing_star() {
        fn prop(c: Case) -> bool {
            let body = c.pat.strip_suffix('*').unwrap_or(&c.pat);
            let valid = c.pat == "*" || (!body.is_empty() && !body.contains('*'));
            match Pattern::parse(&c.pat) {
                Ok(p) => valid && p.matches(&c.name) == glob(c.pat.as_bytes(), c.name.as_bytes()),
                Err(_) => !valid,
            }
        }
        quickcheck::QuickCheck::new()
            .tests(5000)
            .quickcheck(prop as fn(Case) -> bool);
        assert!(Pattern::parse("*").unwrap().matches("anything"));
        assert!(Pattern::parse("room-*").unwrap().matches("room-"));
        assert!(!Pattern::parse("room-*").unwrap().matches("room"));
        assert!(Pattern::parse("a*b").is_err());
        assert!(Pattern::parse("**").is_err());
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a/b").is_err());
    }

    #[test]
    fn token_from_header_or_query() {
        assert_eq!(token_from(Some("Bearer abc"), None).as_deref(), Some("abc"));
        assert_eq!(
            token_from(Some("bearer  abc "), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            token_from(None, Some("from=latest&token=a.b%2Ec")).as_deref(),
            Some("a.b.c")
        );
        assert_eq!(token_from(Some("Basic x"), None), None);
        assert_eq!(token_from(None, Some("from=latest")), None);
    }
}
