//! The `fanfare` command: `serve` runs a node; `pub` and `sub` talk to one over WebSocket.
// Non-test code handles failures instead of panicking (issue 30); an invariant that cannot
// fail is allowed on its smallest scope, with the reason next to it.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use fanfare::client::{AsyncClient, ClientOptions, Event};
use fanfare::settings::Settings;

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
    /// Run a single node (defaults: 127.0.0.1:7070, one shard per core, pinned).
    Serve {
        /// Settings file (TOML; see docs/configuration.md). Flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Shards (0: one per core).
        #[arg(long)]
        shards: Option<usize>,
        /// Do not pin shards to CPUs.
        #[arg(long)]
        no_pin: bool,
        /// Messages of history per topic.
        #[arg(long)]
        history_messages: Option<usize>,
        /// Largest message payload in bytes.
        #[arg(long)]
        max_message_bytes: Option<usize>,
        /// Keep history on disk here (one log per shard; see docs/storage.md). Without it
        /// (and without [storage] data_dir) history lives in memory only.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// With a data dir: acknowledge publishes after fdatasync (`always`, the default) or
        /// after the write (`never`).
        #[arg(long, requires = "data_dir")]
        fsync: Option<String>,
        /// TLS certificate chain (PEM, leaf first): serves wss:// and https:// on the same port.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
        /// Join a cluster as this node id (unique, stable across restarts); see
        /// docs/cluster.md. Without it (and without [cluster]) the node stands alone.
        #[arg(long)]
        node_id: Option<String>,
        /// Roles in the cluster: router, storage, or router,storage (the default).
        #[arg(long)]
        roles: Option<String>,
        /// Address for node links and gossip (TCP and UDP, same port).
        #[arg(long)]
        cluster_listen: Option<SocketAddr>,
        /// The address other nodes reach this one at (default: the cluster listen address).
        #[arg(long)]
        advertise: Option<SocketAddr>,
        /// A node to join through (repeat for several).
        #[arg(long = "seed")]
        seeds: Vec<SocketAddr>,
        /// Mutual TLS on node links: the cluster CA certificate (PEM).
        #[arg(long, requires_all = ["cluster_cert", "cluster_key"])]
        cluster_ca: Option<PathBuf>,
        /// This node's certificate chain for node links (PEM; names the node id).
        #[arg(long, requires_all = ["cluster_ca", "cluster_key"])]
        cluster_cert: Option<PathBuf>,
        /// This node's private key for node links (PEM).
        #[arg(long, requires_all = ["cluster_ca", "cluster_cert"])]
        cluster_key: Option<PathBuf>,
        /// A file with the shared secret authenticating gossip (at least 32 bytes).
        #[arg(long)]
        gossip_key_file: Option<PathBuf>,
    },
    /// Publish messages: the arguments, or each line of standard input when none.
    Pub {
        namespace: String,
        topic: String,
        messages: Vec<String>,
        #[arg(long, default_value = "ws://127.0.0.1:7070/v1/ws")]
        url: String,
        /// Access token (when the broker has authentication on).
        #[arg(long, env = "FANFARE_TOKEN")]
        token: Option<String>,
        /// For wss:// URLs: PEM file of the CA certificates to trust.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Make keys and tokens (see docs/operations.md, "Access control").
    #[command(subcommand)]
    Token(TokenCmd),
    /// Load-test a broker (see docs/benchmarks.md): WebSocket publishers and subscribers,
    /// latency percentiles corrected for coordinated omission, gaps and duplicates.
    Bench(BenchArgs),
    /// Subscribe and print items and discontinuities as they come.
    Sub {
        namespace: String,
        topic: String,
        /// latest, last:N or <epoch>-<seq>
        #[arg(long, default_value = "latest")]
        from: String,
        #[arg(long, default_value = "ws://127.0.0.1:7070/v1/ws")]
        url: String,
        /// Exit after this many items.
        #[arg(long)]
        count: Option<u64>,
        /// Access token (when the broker has authentication on).
        #[arg(long, env = "FANFARE_TOKEN")]
        token: Option<String>,
        /// For wss:// URLs: PEM file of the CA certificates to trust.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
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

fn token_cmd(cmd: TokenCmd) -> Result<()> {
    use fanfare_net::auth;
    match cmd {
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

#[derive(clap::Args, Default)]
struct BenchArgs {
    /// Scenario file (TOML, keys as the flags with underscores); flags override it.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// The broker: ws://, wss:// (Fanfare), redis://, nats:// (peers).
    #[arg(long)]
    url: Option<String>,
    /// Fanfare transport: ws (WebSocket; TLS with a wss:// URL), sse or h2.
    #[arg(long)]
    transport: Option<String>,
    /// Connections each generator thread opens at once while connecting.
    #[arg(long)]
    connect_concurrency: Option<usize>,
    /// Fanfare access token.
    #[arg(long, env = "FANFARE_TOKEN")]
    token: Option<String>,
    /// CA certificate (PEM) to trust for wss:// and https://.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Do not verify the broker's TLS certificate (test certificates only).
    #[arg(long)]
    insecure: bool,
    /// Write an HdrHistogram interval log of delivery latency (1 s intervals, ns) here.
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    #[arg(long)]
    publishers: Option<usize>,
    #[arg(long)]
    subscribers: Option<usize>,
    #[arg(long)]
    topics: Option<usize>,
    /// Payload bytes (at least 20).
    #[arg(long)]
    payload: Option<usize>,
    /// Total messages per second; 0 for as fast as the window allows.
    #[arg(long)]
    rate: Option<u64>,
    /// Publishes in flight per publisher.
    #[arg(long)]
    window: Option<usize>,
    /// Measured seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds.
    #[arg(long)]
    warmup: Option<f64>,
    /// New connections per second while connecting.
    #[arg(long)]
    connect_rate: Option<u64>,
    /// Generator threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Give every publish a unique idempotency key (measures the owner's key window).
    #[arg(long)]
    idempotency_keys: bool,
    /// Stored publishes: JetStream (file storage) on nats://, XADD on redis://; a Fanfare
    /// broker stores when it runs with --data-dir.
    #[arg(long)]
    durable: bool,
    /// The broker's process id (same machine): report its CPU time inside the measured window.
    #[arg(long)]
    broker_pid: Option<u32>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    url: Option<String>,
    publishers: Option<usize>,
    subscribers: Option<usize>,
    topics: Option<usize>,
    payload: Option<usize>,
    rate: Option<u64>,
    window: Option<usize>,
    duration: Option<f64>,
    warmup: Option<f64>,
    connect_rate: Option<u64>,
    threads: Option<usize>,
    transport: Option<String>,
    connect_concurrency: Option<usize>,
}

fn bench(a: BenchArgs) -> Result<()> {
    let f: ScenarioFile = match &a.scenario {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )
        .with_context(|| format!("invalid scenario in {}", p.display()))?,
        None => ScenarioFile::default(),
    };
    let d = fanfare_bench::Scenario::default();
    let secs = |v: f64| std::time::Duration::from_secs_f64(v.max(0.0));
    let s = fanfare_bench::Scenario {
        url: a.url.or(f.url).unwrap_or(d.url),
        publishers: a.publishers.or(f.publishers).unwrap_or(d.publishers),
        subscribers: a.subscribers.or(f.subscribers).unwrap_or(d.subscribers),
        topics: a.topics.or(f.topics).unwrap_or(d.topics),
        payload_bytes: a.payload.or(f.payload).unwrap_or(d.payload_bytes),
        rate: match a.rate.or(f.rate) {
            Some(0) => None,
            Some(r) => Some(r),
            None => d.rate,
        },
        window: a.window.or(f.window).unwrap_or(d.window),
        duration: a.duration.or(f.duration).map_or(d.duration, secs),
        warmup: a.warmup.or(f.warmup).map_or(d.warmup, secs),
        connect_rate: a.connect_rate.or(f.connect_rate),
        threads: a.threads.or(f.threads).unwrap_or(d.threads),
        namespace: d.namespace,
        transport: match a.transport.or(f.transport) {
            Some(t) => t.parse().map_err(anyhow::Error::msg)?,
            None => d.transport,
        },
        connect_concurrency: a
            .connect_concurrency
            .or(f.connect_concurrency)
            .unwrap_or(d.connect_concurrency),
        token: a.token,
        ca: a.ca,
        insecure: a.insecure,
        hdr_log: a.hdr_log,
        idempotency_keys: a.idempotency_keys,
        broker_pid: a.broker_pid,
        durable: a.durable,
    };
    let progress = std::sync::Arc::new(fanfare_bench::Progress::default());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (progress, done) = (progress.clone(), done.clone());
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let t0 = std::time::Instant::now();
            let mut last = 0;
            while !done.load(Relaxed) {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let d = progress.delivered.load(Relaxed);
                eprint!(
                    "\r{:>4.0}s  subscribed {:>7}  published {:>10}  delivered {:>12}  ({:>10}/s)   ",
                    t0.elapsed().as_secs_f64(),
                    progress.subscribed.load(Relaxed),
                    progress.published.load(Relaxed),
                    d,
                    d - last
                );
                last = d;
            }
            eprintln!();
        })
    };
    let r = fanfare_bench::run(&s, progress);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ticker.join();
    let r = r?;
    if a.json {
        println!("{}", r.to_json());
    } else {
        print!("{}", r.table());
    }
    Ok(())
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
        Cmd::Bench(a) => bench(a),
        Cmd::Token(t) => token_cmd(t),
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
            token,
            ca,
        } => async_io::block_on(async {
            let mut opts = ClientOptions::new(url);
            opts.token = token;
            opts.ca = ca;
            let mut c = AsyncClient::connect(opts).await?;
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
            count,
            token,
            ca,
        } => async_io::block_on(async {
            let start = fanfare_proto::http::parse_from(&from).map_err(anyhow::Error::msg)?;
            let mut opts = ClientOptions::new(url);
            opts.token = token;
            opts.ca = ca;
            let mut c = AsyncClient::connect(opts).await?;
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
                        eprintln!("{how} {namespace}/{topic} at {epoch}-{next_seq}");
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
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
