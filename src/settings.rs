//! `fanfare serve` settings: defaults, a TOML file, then command-line flags, in that order.
//! Every key is documented in docs/configuration.md.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

/// The settings file. Every key is optional; units are in the names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Settings {
    pub listen: Option<SocketAddr>,
    pub shards: Option<usize>,
    pub pin: Option<bool>,
    pub cpus: Option<Vec<usize>>,
    pub history_messages_max: Option<usize>,
    pub idempotency_window_ms: Option<u64>,
    pub idempotency_keys_max: Option<usize>,
    pub presence_members_max: Option<usize>,
    pub presence_info_bytes_max: Option<usize>,
    pub presence_events_per_second: Option<u32>,
    pub occupancy_interval_ms: Option<u64>,
    pub presence_page_max: Option<usize>,
    pub history_bytes_max: Option<usize>,
    pub history_age_secs_max: Option<u64>,
    pub topics_per_shard_max: Option<usize>,
    pub subscriptions_per_shard_max: Option<usize>,
    pub message_bytes_max: Option<usize>,
    pub name_bytes_max: Option<usize>,
    pub subscriber_queue_bytes_max: Option<usize>,
    pub subscriber_lag_ms_max: Option<u64>,
    pub heartbeat_interval_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub spin_before_park_us: Option<u64>,
    pub frame_bytes_max: Option<usize>,
    pub header_bytes_max: Option<usize>,
    pub subscriptions_per_connection_max: Option<usize>,
    pub connections_max: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub ping_interval_secs: Option<u64>,
    pub pong_timeout_secs: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub message_timeout_ms: Option<u64>,
    pub send_queue_bytes_max: Option<usize>,
    pub slow_deadline_ms: Option<u64>,
    pub publishes_in_flight_max: Option<usize>,
    pub tls_cert_path: Option<std::path::PathBuf>,
    pub tls_key_path: Option<std::path::PathBuf>,
    pub auth: Option<AuthSettings>,
    pub cluster: Option<ClusterSettings>,
    pub storage: Option<StorageSettings>,
}

/// The `[storage]` table (docs/storage.md). Absent (and no `--data-dir`): history lives in
/// memory only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct StorageSettings {
    pub data_dir: Option<std::path::PathBuf>,
    /// `always` (the default) or `never`.
    pub fsync: Option<String>,
    pub segment_bytes: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub retention_age_secs: Option<u64>,
    pub topic_retention_messages: Option<u64>,
    pub topic_retention_bytes: Option<u64>,
    pub backlog_bytes_max: Option<usize>,
}

impl StorageSettings {
    /// The engine's storage settings; None without a data dir.
    pub fn storage_config(&self) -> Result<Option<fanfare_core::StorageConfig>> {
        let Some(dir) = &self.data_dir else {
            anyhow::ensure!(
                self.fsync.is_none()
                    && self.segment_bytes.is_none()
                    && self.retention_bytes.is_none()
                    && self.retention_age_secs.is_none()
                    && self.topic_retention_messages.is_none()
                    && self.topic_retention_bytes.is_none()
                    && self.backlog_bytes_max.is_none(),
                "[storage] settings need a data_dir (or --data-dir)"
            );
            return Ok(None);
        };
        let mut c = fanfare_core::StorageConfig::new(dir);
        c.fsync = match self.fsync.as_deref() {
            None | Some("always") => fanfare_core::Fsync::Always,
            Some("never") => fanfare_core::Fsync::Never,
            Some(other) => {
                anyhow::bail!("[storage] fsync must be \"always\" or \"never\", not {other:?}")
            }
        };
        if let Some(v) = self.segment_bytes {
            c.segment_bytes = v;
        }
        if let Some(v) = self.retention_bytes {
            c.retention_bytes = v;
        }
        if let Some(v) = self.retention_age_secs {
            c.retention_age = Duration::from_secs(v);
        }
        if let Some(v) = self.topic_retention_messages {
            c.topic_retention_messages = v;
        }
        if let Some(v) = self.topic_retention_bytes {
            c.topic_retention_bytes = v;
        }
        if let Some(v) = self.backlog_bytes_max {
            c.backlog_bytes_max = v;
        }
        Ok(Some(c))
    }
}

/// The `[cluster]` table (docs/cluster.md). Absent: a single node owning every topic.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ClusterSettings {
    pub node_id: Option<String>,
    /// `["router"]`, `["storage"]` or both (the default).
    pub roles: Option<Vec<String>>,
    pub listen: Option<SocketAddr>,
    pub advertise: Option<SocketAddr>,
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
    pub probe_interval_ms: Option<u64>,
    pub probe_timeout_ms: Option<u64>,
    pub suspect_timeout_ms: Option<u64>,
    pub link_connect_timeout_ms: Option<u64>,
    pub link_queue_bytes_max: Option<usize>,
    pub link_frame_bytes_max: Option<usize>,
    pub link_publishes_in_flight_max: Option<usize>,
    pub link_fetches_in_flight_max: Option<usize>,
    pub link_connections_max: Option<usize>,
    /// Mutual TLS on node links (`[cluster.tls]`).
    pub tls: Option<ClusterTlsSettings>,
    /// A file holding the shared secret that authenticates gossip (at least 32 bytes, e.g.
    /// the output of `openssl rand -hex 32`).
    pub gossip_key_file: Option<std::path::PathBuf>,
}

/// The `[cluster.tls]` table: every node link is mutual TLS 1.3 (docs/cluster.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsSettings {
    /// The cluster CA certificate(s) (PEM) every node certificate must chain to.
    pub ca_file: std::path::PathBuf,
    /// This node's certificate chain (PEM, leaf first); the leaf names the node id as a DNS
    /// subjectAltName and allows both server and client authentication.
    pub cert_file: std::path::PathBuf,
    /// This node's private key (PEM).
    pub key_file: std::path::PathBuf,
}

/// Parses a role list (`router`, `storage`).
pub fn parse_roles(roles: &[String]) -> Result<fanfare_net::cluster::Roles> {
    let mut r = fanfare_net::cluster::Roles {
        router: false,
        storage: false,
    };
    for role in roles.iter().flat_map(|s| s.split(',')) {
        match role.trim() {
            "router" => r.router = true,
            "storage" => r.storage = true,
            "" => {}
            other => anyhow::bail!("unknown role {other:?}: use router, storage or both"),
        }
    }
    if !r.router && !r.storage {
        anyhow::bail!("roles must name router, storage or both");
    }
    Ok(r)
}

impl ClusterSettings {
    /// The cluster configuration, over the defaults.
    pub fn cluster_config(&self) -> Result<fanfare_net::cluster::ClusterConfig> {
        let mut c = fanfare_net::cluster::ClusterConfig::default();
        c.node_id = self
            .node_id
            .clone()
            .context("[cluster] needs node_id (unique in the cluster, stable across restarts)")?;
        if let Some(r) = &self.roles {
            c.roles = parse_roles(r)?;
        }
        if let Some(l) = self.listen {
            c.listen = l;
        }
        c.advertise = self.advertise;
        c.seeds = self.seeds.clone();
        let ms = Duration::from_millis;
        if let Some(v) = self.probe_interval_ms {
            c.probe_interval = ms(v.max(10));
        }
        if let Some(v) = self.probe_timeout_ms {
            c.probe_timeout = ms(v.max(5));
        }
        if let Some(v) = self.suspect_timeout_ms {
            c.suspect_timeout = ms(v.max(10));
        }
        if let Some(v) = self.link_connect_timeout_ms {
            c.link_connect_timeout = ms(v.max(10));
        }
        if let Some(v) = self.link_queue_bytes_max {
            c.link_queue_bytes_max = v;
        }
        if let Some(v) = self.link_frame_bytes_max {
            c.link_frame_bytes_max = v;
        }
        if let Some(v) = self.link_publishes_in_flight_max {
            c.link_publishes_in_flight_max = v.max(1);
        }
        if let Some(v) = self.link_fetches_in_flight_max {
            c.link_fetches_in_flight_max = v.max(1);
        }
        if let Some(v) = self.link_connections_max {
            c.link_connections_max = v.max(1);
        }
        if let Some(t) = &self.tls {
            c.tls = Some(std::sync::Arc::new(
                fanfare_net::cluster::LinkTls::from_pem(
                    &t.ca_file,
                    &t.cert_file,
                    &t.key_file,
                    &c.node_id,
                )?,
            ));
        }
        if let Some(k) = &self.gossip_key_file {
            c.gossip_key = Some(fanfare_net::cluster::GossipKey::from_file(k)?);
        }
        Ok(c)
    }
}

/// The `[auth]` table: access control (docs/operations.md). No keys: authentication off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AuthSettings {
    #[serde(default)]
    pub keys: Vec<KeySettings>,
    pub allowed_origins: Option<Vec<String>>,
    pub failure_delay_ms: Option<u64>,
    pub failures_per_ip_max: Option<u32>,
    pub failure_window_secs: Option<u64>,
    pub tracked_ips_max: Option<usize>,
    pub expiry_grace_secs: Option<u64>,
    pub leeway_secs: Option<u64>,
}

/// One `[[auth.keys]]` entry. EdDSA: `public_key` (base64, 32 bytes) and, only where tokens
/// are minted, `private_key` (base64 PKCS#8) or `private_key_file`. HS256: `secret` (base64,
/// at least 32 bytes) or `secret_file`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct KeySettings {
    pub kid: String,
    pub alg: String,
    pub public_key: Option<String>,
    pub private_key: Option<String>,
    pub private_key_file: Option<std::path::PathBuf>,
    pub secret: Option<String>,
    pub secret_file: Option<std::path::PathBuf>,
}

fn inline_or_file(
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
    what: &str,
    kid: &str,
) -> Result<Option<String>> {
    match (inline, file) {
        (Some(_), Some(_)) => anyhow::bail!("key {kid}: set {what} or {what}_file, not both"),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map(|s| Some(s.trim().to_owned()))
            .with_context(|| format!("key {kid}: cannot read {}", p.display())),
        (None, None) => Ok(None),
    }
}

impl KeySettings {
    /// The key this entry describes.
    pub fn key(&self) -> Result<fanfare_net::auth::Key> {
        let kid = &self.kid;
        let alg: fanfare_net::auth::Algorithm = self
            .alg
            .parse()
            .map_err(|e: String| anyhow::anyhow!("key {kid}: {e}"))?;
        let k = match alg {
            fanfare_net::auth::Algorithm::EdDSA => {
                let public = self
                    .public_key
                    .as_deref()
                    .with_context(|| format!("key {kid}: EdDSA needs public_key"))?;
                let private = inline_or_file(
                    &self.private_key,
                    &self.private_key_file,
                    "private_key",
                    kid,
                )?;
                fanfare_net::auth::Key::eddsa(kid, public, private.as_deref())
            }
            fanfare_net::auth::Algorithm::HS256 => {
                let secret = inline_or_file(&self.secret, &self.secret_file, "secret", kid)?
                    .with_context(|| format!("key {kid}: HS256 needs secret or secret_file"))?;
                fanfare_net::auth::Key::hs256(kid, &secret)
            }
        };
        k.map_err(anyhow::Error::msg)
    }
}

impl AuthSettings {
    /// The access-control settings over the defaults.
    pub fn auth_config(&self) -> Result<fanfare_net::auth::AuthConfig> {
        let mut a = fanfare_net::auth::AuthConfig::default();
        for k in &self.keys {
            a.keys.push(k.key()?);
        }
        if let Some(o) = &self.allowed_origins {
            a.allowed_origins = o.clone();
        }
        if let Some(v) = self.failure_delay_ms {
            a.failure_delay = Duration::from_millis(v);
        }
        if let Some(v) = self.failures_per_ip_max {
            a.failures_per_ip_max = v;
        }
        if let Some(v) = self.failure_window_secs {
            a.failure_window = Duration::from_secs(v);
        }
        if let Some(v) = self.tracked_ips_max {
            a.tracked_ips_max = v;
        }
        if let Some(v) = self.expiry_grace_secs {
            a.expiry_grace = Duration::from_secs(v);
        }
        if let Some(v) = self.leeway_secs {
            a.leeway = Duration::from_secs(v);
        }
        Ok(a)
    }
}

impl Settings {
    /// Reads a TOML settings file. A mistake in it is one line naming the file, line and
    /// column (see [`toml_error_line`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid settings: {}", toml_error_line(path, &text, &e)))
    }

    /// Applies the settings over the defaults (`pin` defaults to true for `serve`) and loads
    /// the TLS certificate and key when both are set.
    pub fn server_config_with_tls(&self) -> Result<fanfare_net::ServerConfig> {
        let mut c = self.server_config();
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(cert), Some(key)) => c.tls = Some(fanfare_net::tls_from_pem(cert, key)?),
            (None, None) => {}
            _ => anyhow::bail!("TLS needs both tls_cert_path and tls_key_path"),
        }
        if let Some(a) = &self.auth {
            c.auth = a.auth_config()?;
        }
        if let Some(cl) = &self.cluster {
            let mut cc = cl.cluster_config()?;
            // Frames on links carry client payloads plus names.
            cc.link_frame_bytes_max = cc
                .link_frame_bytes_max
                .max(c.engine.message_bytes_max + 64 * 1024);
            c.cluster = Some(cc);
        }
        if let Some(st) = &self.storage {
            c.engine.storage = st.storage_config()?;
        }
        Ok(c)
    }

    /// Applies the settings over the defaults (`pin` defaults to true for `serve`), without TLS.
    pub fn server_config(&self) -> fanfare_net::ServerConfig {
        let mut c = fanfare_net::ServerConfig::default();
        c.engine.pin = true;
        let e = &mut c.engine;
        let l = &mut c.limits;
        macro_rules! set {
            ($dst:expr, $src:expr) => {
                if let Some(v) = $src.clone() {
                    $dst = v;
                }
            };
            ($dst:expr, $src:expr, $f:expr) => {
                if let Some(v) = $src {
                    $dst = $f(v);
                }
            };
        }
        set!(c.listen, self.listen);
        set!(e.shards, self.shards);
        set!(e.pin, self.pin);
        if let Some(cpus) = &self.cpus {
            e.cpus = Some(cpus.clone());
        }
        set!(e.history_messages_max, self.history_messages_max);
        set!(
            e.idempotency_window,
            self.idempotency_window_ms,
            Duration::from_millis
        );
        set!(e.idempotency_keys_max, self.idempotency_keys_max);
        set!(e.presence_members_max, self.presence_members_max);
        set!(e.presence_info_bytes_max, self.presence_info_bytes_max);
        set!(
            e.presence_events_per_second,
            self.presence_events_per_second
        );
        set!(
            e.occupancy_interval,
            self.occupancy_interval_ms,
            Duration::from_millis
        );
        set!(e.presence_page_max, self.presence_page_max);
        set!(e.history_bytes_max, self.history_bytes_max);
        set!(
            e.history_age_max,
            self.history_age_secs_max,
            Duration::from_secs
        );
        set!(e.topics_per_shard_max, self.topics_per_shard_max);
        set!(
            e.subscriptions_per_shard_max,
            self.subscriptions_per_shard_max
        );
        set!(e.message_bytes_max, self.message_bytes_max);
        set!(e.name_bytes_max, self.name_bytes_max);
        set!(
            e.subscriber_queue_bytes_max,
            self.subscriber_queue_bytes_max
        );
        set!(
            e.subscriber_lag_max,
            self.subscriber_lag_ms_max,
            Duration::from_millis
        );
        set!(
            e.heartbeat_interval,
            self.heartbeat_interval_ms,
            Duration::from_millis
        );
        set!(
            e.drain_timeout,
            self.drain_timeout_ms,
            Duration::from_millis
        );
        if let Some(us) = self.spin_before_park_us {
            e.spin_before_park = (us > 0).then(|| Duration::from_micros(us));
        }
        set!(l.frame_bytes_max, self.frame_bytes_max);
        set!(l.header_bytes_max, self.header_bytes_max);
        set!(
            l.subscriptions_per_connection_max,
            self.subscriptions_per_connection_max
        );
        set!(l.connections_max, self.connections_max);
        set!(
            l.handshake_timeout,
            self.handshake_timeout_ms,
            Duration::from_millis
        );
        set!(l.idle_timeout, self.idle_timeout_secs, Duration::from_secs);
        set!(
            l.ping_interval,
            self.ping_interval_secs,
            Duration::from_secs
        );
        set!(l.pong_timeout, self.pong_timeout_secs, Duration::from_secs);
        set!(l.body_timeout, self.body_timeout_ms, Duration::from_millis);
        set!(
            l.message_timeout,
            self.message_timeout_ms,
            Duration::from_millis
        );
        set!(l.send_queue_bytes_max, self.send_queue_bytes_max);
        set!(
            l.slow_deadline,
            self.slow_deadline_ms,
            Duration::from_millis
        );
        set!(l.publishes_in_flight_max, self.publishes_in_flight_max);
        c
    }
}

/// A TOML error in `text`, read from `path`, as one line: `path:line:column: message`, with
/// "unknown field `x`, expected one of (every key)" said as "unknown key `x`" and the nearest
/// known key, if one is close.
pub fn toml_error_line(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let message = unknown_key(&message).unwrap_or(message);
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{}:{line}:{column}: {message}", path.display())
        }
        None => format!("{}: {message}", path.display()),
    }
}

/// serde's "unknown field `lisen`, expected one of `listen`, .." as "unknown key `lisen` (did
/// you mean `listen`?)".
fn unknown_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, known) = rest.split_once('`')?;
    let nearest = known
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (edit_distance(key, k), k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 3))
        .min();
    Some(match nearest {
        Some((_, k)) => format!("unknown key `{key}` (did you mean `{k}`?)"),
        None => format!("unknown key `{key}` (docs/configuration.md lists the keys)"),
    })
}

/// Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_unknown_keys_fail() {
        let s: Settings =
            toml::from_str("listen = \"0.0.0.0:9000\"\nshards = 3\nheartbeat_interval_ms = 250\n")
                .unwrap();
        let c = s.server_config();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.engine.shards, 3);
        assert!(c.engine.pin);
        assert_eq!(c.engine.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(c.limits.subscriptions_per_connection_max, 1024);
        assert!(toml::from_str::<Settings>("lisen = 1").is_err());
    }

    #[test]
    fn toml_errors_are_one_line_with_a_place() {
        let path = Path::new("f.toml");
        let line = |text: &str| {
            let e = toml::from_str::<Settings>(text).expect_err("a bad file");
            toml_error_line(path, text, &e)
        };
        assert_eq!(
            line("shards = 2\nlisen = \"127.0.0.1:1\"\n"),
            "f.toml:2:1: unknown key `lisen` (did you mean `listen`?)"
        );
        assert_eq!(
            line("[storage]\nbanana = 1\n"),
            "f.toml:2:1: unknown key `banana` (docs/configuration.md lists the keys)"
        );
        let wrong_type = line("shards = \"two\"\n");
        assert!(wrong_type.starts_with("f.toml:1:10: "), "{wrong_type}");
        assert!(!wrong_type.contains('\n'), "{wrong_type}");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn auth_keys_from_toml_and_refusals() {
        let k =
            fanfare_net::auth::Key::generate("k1", fanfare_net::auth::Algorithm::EdDSA).unwrap();
        let h =
            fanfare_net::auth::Key::generate("h1", fanfare_net::auth::Algorithm::HS256).unwrap();
        let text = format!(
            "[auth]\nallowed_origins = [\"https://a.example\"]\nexpiry_grace_secs = 7\n{}{}",
            k.to_toml(),
            h.to_toml()
        );
        let s: Settings = toml::from_str(&text).unwrap();
        let c = s.server_config_with_tls().unwrap();
        assert_eq!(c.auth.keys.len(), 2);
        assert!(c.auth.keys[0].sign.is_some());
        assert_eq!(c.auth.expiry_grace, Duration::from_secs(7));
        assert_eq!(c.auth.allowed_origins, vec!["https://a.example".to_owned()]);
        // A short secret, an unknown algorithm, a public key of the wrong size.
        for bad in [
            "[[auth.keys]]\nkid = \"x\"\nalg = \"HS256\"\nsecret = \"c2hvcnQ=\"\n",
            "[[auth.keys]]\nkid = \"x\"\nalg = \"none\"\nsecret = \"c2hvcnQ=\"\n",
            "[[auth.keys]]\nkid = \"x\"\nalg = \"EdDSA\"\npublic_key = \"c2hvcnQ=\"\n",
        ] {
            let s: Settings = toml::from_str(bad).unwrap();
            assert!(s.server_config_with_tls().is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_security_settings_load_or_say_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("fanfare-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short.key");
        std::fs::write(&short, "too short\n").unwrap();
        let good = dir.join("good.key");
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        let load = |extra: &str| {
            let s: Settings =
                toml::from_str(&format!("[cluster]\nnode_id = \"n1\"\n{extra}")).unwrap();
            s.server_config_with_tls()
        };
        let c = load(&format!("gossip_key_file = {good:?}\n")).unwrap();
        assert!(c.cluster.unwrap().gossip_key.is_some());
        let e = load(&format!("gossip_key_file = {short:?}\n")).unwrap_err();
        assert!(format!("{e:#}").contains("at least 32"), "{e:#}");
        let missing = dir.join("missing.pem");
        let e = load(&format!(
            "[cluster.tls]\nca_file = {missing:?}\ncert_file = {missing:?}\nkey_file = {missing:?}\n"
        ))
        .unwrap_err();
        assert!(format!("{e:#}").contains("missing.pem"), "{e:#}");
        // All three files are needed.
        assert!(toml::from_str::<Settings>("[cluster.tls]\nca_file = \"a\"\n").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
