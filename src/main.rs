//! The `fanfare` command: `serve` runs a node; `pub` and `sub` talk to one over WebSocket;
//! the other subcommands are in `cmd/`.
// Non-test code handles failures instead of panicking (issue 30); an invariant that cannot
// fail is allowed on its smallest scope, with the reason next to it.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::builder::BoolishValueParser;
use clap::{CommandFactory, Parser, Subcommand};
use fanfare::client::{AsyncClient, ClientOptions, Event};
use fanfare::settings::Settings;

mod cmd;

#[derive(Parser)]
#[command(
    name = "fanfare",
    version,
    about = "Fanfare: a thread-per-core pub/sub broker for real-time fan-out"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (defaults: 127.0.0.1:7070, one shard per core, pinned). Every flag can also
    /// be set in the environment (FANFARE_LISTEN, ...; --seed as FANFARE_SEEDS, comma
    /// separated; switches as 1/0, true/false, yes/no): flags win over the environment,
    /// which wins over the settings file, which wins over the defaults.
    Serve {
        /// Settings file (TOML; see docs/configuration.md). Flags and the environment
        /// override it.
        #[arg(long, env = "FANFARE_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, env = "FANFARE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Shards (0: one per core).
        #[arg(long, env = "FANFARE_SHARDS")]
        shards: Option<usize>,
        /// Do not pin shards to CPUs.
        #[arg(long, env = "FANFARE_NO_PIN", value_parser = BoolishValueParser::new())]
        no_pin: bool,
        /// Messages of history per topic.
        #[arg(long, env = "FANFARE_HISTORY_MESSAGES")]
        history_messages: Option<usize>,
        /// Largest message payload in bytes.
        #[arg(long, env = "FANFARE_MAX_MESSAGE_BYTES")]
        max_message_bytes: Option<usize>,
        /// Keep history on disk here (one log per shard; see docs/storage.md). Without it
        /// (and without [storage] data_dir) history lives in memory only.
        #[arg(long, env = "FANFARE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// With a data dir: acknowledge publishes after fdatasync (`always`, the default) or
        /// after the write (`never`).
        #[arg(long, env = "FANFARE_FSYNC")]
        fsync: Option<String>,
        /// TLS certificate chain (PEM, leaf first): serves wss:// and https:// on the same port.
        #[arg(long, requires = "tls_key", env = "FANFARE_TLS_CERT")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert", env = "FANFARE_TLS_KEY")]
        tls_key: Option<PathBuf>,
        /// Log as JSON lines.
        #[arg(long, env = "FANFARE_LOG_JSON", value_parser = BoolishValueParser::new())]
        log_json: bool,
        /// Join a cluster as this node id (unique, stable across restarts); see
        /// docs/cluster.md. Without it (and without [cluster]) the node stands alone.
        #[arg(long, env = "FANFARE_NODE_ID")]
        node_id: Option<String>,
        /// Roles in the cluster: router, storage, or router,storage (the default).
        #[arg(long, env = "FANFARE_ROLES")]
        roles: Option<String>,
        /// Address for node links and gossip (TCP and UDP, same port).
        #[arg(long, env = "FANFARE_CLUSTER_LISTEN")]
        cluster_listen: Option<SocketAddr>,
        /// The address other nodes reach this one at (default: the cluster listen address).
        #[arg(long, env = "FANFARE_ADVERTISE")]
        advertise: Option<SocketAddr>,
        /// A node to join through (repeat for several).
        #[arg(long = "seed", env = "FANFARE_SEEDS", value_delimiter = ',')]
        seeds: Vec<SocketAddr>,
        /// Mutual TLS on node links: the cluster CA certificate (PEM).
        #[arg(long, requires_all = ["cluster_cert", "cluster_key"], env = "FANFARE_CLUSTER_CA")]
        cluster_ca: Option<PathBuf>,
        /// This node's certificate chain for node links (PEM; names the node id).
        #[arg(long, requires_all = ["cluster_ca", "cluster_key"], env = "FANFARE_CLUSTER_CERT")]
        cluster_cert: Option<PathBuf>,
        /// This node's private key for node links (PEM).
        #[arg(long, requires_all = ["cluster_ca", "cluster_cert"], env = "FANFARE_CLUSTER_KEY")]
        cluster_key: Option<PathBuf>,
        /// A file with the shared secret authenticating gossip (at least 32 bytes).
        #[arg(long, env = "FANFARE_GOSSIP_KEY_FILE")]
        gossip_key_file: Option<PathBuf>,
    },
    /// Publish messages: the arguments, or each line of standard input when none.
    Pub {
        namespace: String,
        topic: String,
        messages: Vec<String>,
        /// The broker's WebSocket URL.
        #[arg(long, env = "FANFARE_URL", default_value = "ws://127.0.0.1:7070/v1/ws")]
        url: String,
        /// Seconds to wait for the broker to accept the first connection (0: fail at once
        /// when nothing answers at the URL).
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
        /// Access token (when the broker has authentication on).
        #[arg(long, env = "FANFARE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// For wss:// URLs: PEM file of the CA certificates to trust.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Make keys and tokens, and show what a token grants (see docs/operations.md, "Access
    /// control").
    #[command(subcommand)]
    Token(cmd::token::TokenCmd),
    /// Load-test a broker (see docs/benchmarks.md): WebSocket publishers and subscribers,
    /// latency percentiles corrected for coordinated omission, gaps and duplicates.
    Bench(cmd::bench::BenchArgs),
    /// Check a settings file: one line per problem and exit status 1, or a short summary of
    /// what it sets and exit status 0. The environment and flags are not applied.
    CheckConfig {
        /// The settings file (TOML).
        file: PathBuf,
    },
    /// Print shell completions for `fanfare` (for packages: packaging/build.sh).
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(hide = true)]
    Man {
        /// Write fanfare.1 and fanfare-<command>.1 here instead of printing fanfare.1.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Subscribe and print items and discontinuities as they come.
    Sub {
        namespace: String,
        topic: String,
        /// latest, last:N or <epoch>-<seq>
        #[arg(long, default_value = "latest")]
        from: String,
        /// The broker's WebSocket URL.
        #[arg(long, env = "FANFARE_URL", default_value = "ws://127.0.0.1:7070/v1/ws")]
        url: String,
        /// Seconds to wait for the broker to accept the first connection (0: fail at once
        /// when nothing answers at the URL). Later disconnects are always waited out.
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
        /// Exit after this many items.
        #[arg(long)]
        count: Option<u64>,
        /// Access token (when the broker has authentication on).
        #[arg(long, env = "FANFARE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// For wss:// URLs: PEM file of the CA certificates to trust.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("fanfare: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Bench(a) => cmd::bench::bench(a),
        Cmd::Token(t) => cmd::token::token_cmd(t),
        Cmd::CheckConfig { file } => {
            if cmd::check::check_config(&file) > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Completions { shell } => {
            cmd::docs::completions(shell, Cli::command(), &mut std::io::stdout().lock())
        }
        Cmd::Man { out_dir } => cmd::docs::man(Cli::command(), out_dir.as_deref()),
        Cmd::Serve {
            config,
            listen,
            shards,
            no_pin,
            history_messages,
            max_message_bytes,
            data_dir,
            fsync,
            tls_cert,
            tls_key,
            log_json,
            node_id,
            roles,
            cluster_listen,
            advertise,
            seeds,
            cluster_ca,
            cluster_cert,
            cluster_key,
            gossip_key_file,
        } => {
            init_logs(log_json);
            let mut s = match &config {
                Some(p) => Settings::from_file(p)?,
                None => Settings::default(),
            };
            s.listen = listen.or(s.listen);
            s.shards = shards.or(s.shards);
            if no_pin {
                s.pin = Some(false);
            }
            s.history_messages_max = history_messages.or(s.history_messages_max);
            s.message_bytes_max = max_message_bytes.or(s.message_bytes_max);
            if data_dir.is_some() || fsync.is_some() {
                let st = s.storage.get_or_insert_with(Default::default);
                st.data_dir = data_dir.or(st.data_dir.take());
                st.fsync = fsync.or(st.fsync.take());
            }
            s.tls_cert_path = tls_cert.or(s.tls_cert_path);
            s.tls_key_path = tls_key.or(s.tls_key_path);
            let clustered = node_id.is_some()
                || roles.is_some()
                || cluster_listen.is_some()
                || advertise.is_some()
                || !seeds.is_empty()
                || cluster_ca.is_some()
                || gossip_key_file.is_some();
            if clustered {
                let c = s.cluster.get_or_insert_with(Default::default);
                c.node_id = node_id.or(c.node_id.take());
                if let Some(r) = roles {
                    c.roles = Some(vec![r]);
                }
                c.listen = cluster_listen.or(c.listen);
                c.advertise = advertise.or(c.advertise);
                c.seeds.extend(seeds);
                if let (Some(ca_file), Some(cert_file), Some(key_file)) =
                    (cluster_ca, cluster_cert, cluster_key)
                {
                    c.tls = Some(fanfare::settings::ClusterTlsSettings {
                        ca_file,
                        cert_file,
                        key_file,
                    });
                }
                c.gossip_key_file = gossip_key_file.or(c.gossip_key_file.take());
            }
            serve(s.server_config_with_tls()?)
        }
        Cmd::Pub {
            namespace,
            topic,
            messages,
            url,
            wait,
            token,
            ca,
        } => async_io::block_on(async {
            let mut opts = ClientOptions::new(url);
            opts.token = token;
            opts.ca = ca;
            let mut c = connect(opts, wait).await?;
            let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = if messages.is_empty() {
                Box::new(std::io::stdin().lock().lines())
            } else {
                Box::new(messages.into_iter().map(Ok))
            };
            for m in lines {
                let (epoch, seq) = c.publish(&namespace, &topic, Bytes::from(m?), None).await?;
                println!("{epoch}-{seq}");
            }
            Ok(())
        }),
        Cmd::Sub {
            namespace,
            topic,
            from,
            url,
            wait,
            count,
            token,
            ca,
        } => async_io::block_on(async {
            let start = fanfare_proto::http::parse_from(&from).map_err(anyhow::Error::msg)?;
            let mut opts = ClientOptions::new(url.clone());
            opts.token = token;
            opts.ca = ca;
            let mut c = connect(opts, wait).await?;
            c.subscribe(&namespace, &topic, start).await?;
            let mut seen = 0;
            // Reconnects and resumes by itself: a restart of the broker shows as a line on
            // stderr, and anything it could not deliver as a discontinuity line.
            while count.is_none_or(|n| seen < n) {
                match c.next_event().await? {
                    Event::Message {
                        epoch,
                        seq,
                        payload,
                        ..
                    } => {
                        println!("{epoch}-{seq} {}", String::from_utf8_lossy(&payload));
                        seen += 1;
                    }
                    Event::Discontinuity {
                        last_epoch,
                        last_seq,
                        new_epoch,
                        new_seq,
                        ..
                    } => println!(
                        "discontinuity: missed after {last_epoch}-{last_seq}, continuing at {new_epoch}-{new_seq}"
                    ),
                    Event::Subscribed {
                        epoch,
                        next_seq,
                        resumed,
                        ..
                    } => {
                        let how = if resumed { "resumed" } else { "subscribed to" };
                        eprintln!("{how} {namespace}/{topic} at {epoch}-{next_seq} on {url}");
                    }
                    Event::Disconnected { reason } => {
                        eprintln!("disconnected ({reason}); reconnecting");
                    }
                    Event::Reconnected | Event::Presence { .. } => {}
                }
                use std::io::Write as _;
                std::io::stdout().flush()?;
            }
            Ok(())
        }),
    }
}

/// The first connection of `pub` and `sub`: at once, or, with `wait_secs`, waiting that long
/// for a broker that is not up yet (and saying so). A failure is one line naming the URL.
async fn connect(mut opts: ClientOptions, wait_secs: f64) -> Result<AsyncClient> {
    let url = opts.url.clone();
    let wait = Duration::try_from_secs_f64(wait_secs)
        .with_context(|| format!("--wait must be a number of seconds, not {wait_secs}"))?;
    opts.connect_timeout = Duration::ZERO;
    let first = match AsyncClient::connect(opts.clone()).await {
        Ok(c) => return Ok(c),
        // The broker answered and said no (a token, a version): waiting cannot help.
        Err(e) if fanfare::client::is_refused(&e) => return Err(e),
        Err(e) => e,
    };
    if wait.is_zero() {
        let nothing_listens = first.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        if nothing_listens {
            anyhow::bail!(
                "{first:#}: nothing listens at {url} (start `fanfare serve`, give the \
                 broker's --url, or --wait SECS for it)"
            );
        }
        return Err(first.context(url));
    }
    eprintln!("fanfare: waiting up to {wait_secs} s for a broker at {url} ({first:#})");
    opts.connect_timeout = wait;
    AsyncClient::connect(opts)
        .await
        .with_context(|| format!("no broker answered at {url} within {wait_secs} s"))
}

/// Raises the open-files soft limit to the hard limit (every connection is a descriptor; a
/// soft limit of 1,024 would cap a node far below `connections_max`), and logs both. Called
/// once the node is up, so a start-up error stays the one line it is.
fn raise_open_files_limit() {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            return;
        }
    };
    if soft >= hard {
        tracing::info!(
            soft,
            hard,
            "open-files limit (soft already at the hard limit)"
        );
        return;
    }
    // An unlimited hard limit still stops at the kernel's per-process maximum.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let to = hard.min(nr_open);
    match rlimit::setrlimit(rlimit::Resource::NOFILE, to, hard) {
        Ok(()) => tracing::info!(from = soft, to, hard, "raised the open-files soft limit"),
        Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-files soft limit"),
    }
}

fn serve(cfg: fanfare_net::ServerConfig) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    // A log write past the file-size limit (`ulimit -f`) then fails with EFBIG, which the
    // shard reports as a storage error (StorageUnavailable), instead of SIGXFSZ killing the
    // process.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .context("cannot install the SIGXFSZ handler")?;
    let shards = cfg.engine.shard_count();
    let pinned = cfg.engine.pin;
    let cfg_tls = cfg.tls.is_some();
    let kids: Vec<String> = cfg.auth.keys.iter().map(|k| k.kid.clone()).collect();
    let cluster = cfg.cluster.as_ref().map(|c| (c.node_id.clone(), c.roles));
    let server = fanfare_net::start(cfg)?;
    // Right after the listeners are up: only a connection storm in the first microseconds
    // could meet the old limit, and start-up errors above stay one line.
    raise_open_files_limit();
    let addr = server.local_addr();
    let tls = if cfg_tls {
        format!(", TLS too: wss://{addr}/v1/ws")
    } else {
        String::new()
    };
    let pin = if pinned { ", pinned" } else { "" };
    println!(
        "fanfare listening on {addr} ({shards} shards{pin}); WebSocket at ws://{addr}/v1/ws{tls}"
    );
    if let (Some((id, roles)), Some(caddr)) = (cluster, server.cluster_addr()) {
        let roles = match (roles.router, roles.storage) {
            (true, true) => "router+storage",
            (true, false) => "router",
            _ => "storage",
        };
        println!("fanfare cluster node {id} ({roles}) on {caddr}");
    }
    if kids.is_empty() {
        tracing::warn!(
            "authentication is OFF: anyone who can reach {addr} can publish and subscribe (add [[auth.keys]], see docs/operations.md)"
        );
    } else {
        tracing::info!(keys = ?kids, "authentication is on: every request needs a token");
    }
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down: draining connections");
    }
    server.shutdown();
    println!("fanfare stopped");
    Ok(())
}

fn init_logs(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour only for a person at a terminal: a file or the journal would keep the escape
    // codes as text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
