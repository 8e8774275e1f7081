//! `fanfare token`: make keys, mint tokens, and show what a token grants.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Subcommand;
use fanfare::net::auth;
use fanfare::settings::Settings;

/// `fanfare token ..`.
#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a new key and print it as a `[[auth.keys]]` entry for the settings file.
    Keygen {
        /// Key id (put in each token's header; use a new one for each rotation).
        #[arg(long, default_value = "k1")]
        kid: String,
        /// EdDSA (Ed25519; brokers need only the public key) or HS256 (shared secret).
        #[arg(long, default_value = "EdDSA")]
        alg: String,
    },
    /// Mint a token with a key from the settings file.
    Create {
        /// Settings file holding the signing key (its private_key or secret).
        #[arg(long)]
        config: PathBuf,
        /// Which key to sign with (default: the last key that can sign).
        #[arg(long)]
        kid: Option<String>,
        /// Subject: stamped on everything the holder publishes.
        #[arg(long, default_value = "anonymous")]
        sub: String,
        /// Namespace pattern: a name, `prefix*` or `*`.
        #[arg(long, default_value = "*")]
        ns: String,
        /// Topic pattern: a name, `prefix*` or `*`.
        #[arg(long, default_value = "*")]
        topic: String,
        /// Grant publishing on the patterns.
        #[arg(long)]
        publish: bool,
        /// Grant subscribing on the patterns.
        #[arg(long)]
        subscribe: bool,
        /// Grant presence on the patterns (member lists, join and leave events).
        #[arg(long)]
        presence: bool,
        /// Grant the admin endpoints.
        #[arg(long)]
        admin: bool,
        /// Lifetime: seconds, or a number with s, m, h or d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Token id (default: random).
        #[arg(long)]
        jti: Option<String>,
    },
    /// Show what a token grants: its key, subject, times, rights and patterns. With
    /// --config the signature and times are verified with that file's keys (exit status 1
    /// when the token would be refused); without, the claims are only decoded, NOT verified.
    Inspect {
        /// The token (default: $FANFARE_TOKEN).
        #[arg(env = "FANFARE_TOKEN", hide_env_values = true)]
        token: String,
        /// Settings file with the verification keys (a broker's, or the minting one).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Parses `90`, `90s`, `15m`, `1h`, `7d`.
fn parse_ttl(s: &str) -> Result<u64> {
    let s = s.trim();
    let (n, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().with_context(|| format!("bad ttl {s:?}"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("bad ttl {s:?}: use s, m, h or d"),
    };
    let secs = n.checked_mul(mul).context("ttl too large")?;
    if secs == 0 {
        bail!("ttl must be positive");
    }
    Ok(secs)
}

/// Runs a `fanfare token` subcommand.
pub fn token_cmd(cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Inspect { token, config } => inspect(&token, config.as_deref()),
        TokenCmd::Keygen { kid, alg } => {
            let alg: auth::Algorithm = alg.parse().map_err(anyhow::Error::msg)?;
            let k = auth::Key::generate(&kid, alg).map_err(anyhow::Error::msg)?;
            print!("{}", k.to_toml());
            Ok(())
        }
        TokenCmd::Create {
            config,
            kid,
            sub,
            ns,
            topic,
            publish,
            subscribe,
            presence,
            admin,
            ttl,
            jti,
        } => {
            let s = Settings::from_file(&config)?;
            let keys = s
                .auth
                .as_ref()
                .map(|a| a.keys.iter().map(|k| k.key()).collect::<Result<Vec<_>>>())
                .transpose()?
                .unwrap_or_default();
            let key = match &kid {
                Some(kid) => keys
                    .iter()
                    .find(|k| &k.kid == kid)
                    .with_context(|| format!("no key {kid} in {}", config.display()))?,
                None => keys
                    .iter()
                    .rev()
                    .find(|k| k.sign.is_some())
                    .with_context(|| format!("no signing key in {}", config.display()))?,
            };
            let mut rights = Vec::new();
            if publish {
                rights.push("publish".to_owned());
            }
            if subscribe {
                rights.push("subscribe".to_owned());
            }
            if presence {
                rights.push("presence".to_owned());
            }
            if rights.is_empty() && !admin {
                bail!("grant something: --publish, --subscribe, --presence and/or --admin");
            }
            for p in [&ns, &topic] {
                auth::Pattern::parse(p).map_err(anyhow::Error::msg)?;
            }
            let now = auth::unix_now();
            let claims = auth::Claims {
                sub,
                exp: now + parse_ttl(&ttl)?,
                nbf: None,
                iat: Some(now),
                jti: Some(jti.unwrap_or_else(random_id)),
                perms: if rights.is_empty() {
                    Vec::new()
                } else {
                    vec![auth::PermissionClaim { ns, topic, rights }]
                },
                admin,
            };
            println!("{}", auth::mint(key, &claims).map_err(anyhow::Error::msg)?);
            Ok(())
        }
    }
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// `fanfare token inspect`: the verdict first (verified with which key, or refused and why,
/// or not verified at all), then the claims.
fn inspect(token: &str, config: Option<&Path>) -> Result<()> {
    let token = token.trim();
    let (header, claims) = decode_unverified(token)?;
    let refused = match config {
        None => {
            println!("NOT VERIFIED: decoded only (give --config with the keys to check the signature and times)");
            None
        }
        Some(path) => {
            let s = Settings::from_file(path)?;
            let a = s.auth.unwrap_or_default().auth_config()?;
            if a.keys.is_empty() {
                bail!("{} has no [[auth.keys]] to verify with", path.display());
            }
            let v = auth::Verifier::new(&a.keys, a.leeway).map_err(anyhow::Error::msg)?;
            match v.verify(token) {
                Ok(_) => {
                    println!(
                        "valid: signature verified with key {} from {}",
                        header.kid,
                        path.display()
                    );
                    None
                }
                Err(e) => {
                    println!("REFUSED by the keys in {}: {e}", path.display());
                    Some(e)
                }
            }
        }
    };
    let now = auth::unix_now();
    println!("key        {} ({})", header.kid, header.alg);
    println!("subject    {}", claims.sub);
    if let Some(jti) = &claims.jti {
        println!("token id   {jti}");
    }
    if let Some(iat) = claims.iat {
        println!("issued     {}", when(iat, now));
    }
    if let Some(nbf) = claims.nbf {
        println!("not before {}", when(nbf, now));
    }
    println!("expires    {}", when(claims.exp, now));
    println!(
        "admin      {}",
        if claims.admin {
            "yes (the /v1/admin endpoints)"
        } else {
            "no"
        }
    );
    if claims.perms.is_empty() {
        println!("grants     nothing on topics");
    }
    for p in &claims.perms {
        println!("grants     {} on {}/{}", p.rights.join(", "), p.ns, p.topic);
    }
    match refused {
        Some(e) => bail!("token refused: {e}"),
        None => Ok(()),
    }
}

/// A token's header fields that matter here.
#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default = "no_kid")]
    kid: String,
}

fn no_kid() -> String {
    "(none)".to_owned()
}

/// The header and claims of a JWT, decoded without checking anything.
fn decode_unverified(token: &str) -> Result<(Header, auth::Claims)> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a token: a JWT has three dot-separated parts");
    };
    let part = |name: &str, b64: &str| -> Result<Vec<u8>> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64.trim_end_matches('='))
            .with_context(|| format!("not a token: its {name} is not base64url"))
    };
    let header: Header = serde_json::from_slice(&part("header", h)?)
        .context("not a token: its header is not a JWT header")?;
    let claims: auth::Claims = serde_json::from_slice(&part("claims", c)?)
        .context("not a Fanfare token: its claims lack sub or exp, or have the wrong types")?;
    Ok((header, claims))
}

/// `unix` as Unix seconds and relative to `now` ("in 55m", "3h 2m ago").
fn when(unix: u64, now: u64) -> String {
    let span = |secs: u64| match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    };
    if unix == now {
        format!("{unix} (now)")
    } else if unix > now {
        format!("{unix} (in {})", span(unix - now))
    } else {
        format!("{unix} ({} ago)", span(now - unix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_and_relative_times() {
        assert_eq!(parse_ttl("90").ok(), Some(90));
        assert_eq!(parse_ttl("15m").ok(), Some(900));
        assert!(parse_ttl("0").is_err() && parse_ttl("3w").is_err());
        assert_eq!(when(1000, 1000), "1000 (now)");
        assert_eq!(when(1000 + 3 * 3600 + 120, 1000), "11920 (in 3h 2m)");
        assert_eq!(when(1000, 1000 + 2 * 86_400), "1000 (2d 0h ago)");
    }

    #[test]
    fn garbage_is_not_a_token() {
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.e30.x"] {
            assert!(decode_unverified(bad).is_err(), "{bad}");
        }
    }
}
