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
    pub send_queue_bytes_max: Option<usize>,
    pub slow_deadline_ms: Option<u64>,
    pub publishes_in_flight_max: Option<usize>,
    pub tls_cert_path: Option<std::path::PathBuf>,
    pub tls_key_path: Option<std::path::PathBuf>,
}

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid settings in {}", path.display()))
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
}
