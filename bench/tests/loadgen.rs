//! The load generator against a real server over loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanfare_bench::{run, Progress, Scenario, Transport};

#[path = "../../tests/common/eventually.rs"]
mod eventually;

/// The publishes a fixed-rate scenario schedules inside its measured window: the rate times the
/// duration, give or take one per publisher at the window's edges. The count is of intended send
/// times (on schedule however late the sends are), so it holds on a slow machine too, as long as
/// the acknowledgements come within the run's grace time.
fn assert_scheduled(s: &Scenario, r: &fanfare_bench::Report) {
    let rate = s.rate.expect("a fixed rate") as f64;
    let want = (rate * s.duration.as_secs_f64()).round() as u64;
    assert!(
        r.published.abs_diff(want) <= s.publishers as u64,
        "published {} of the {want} scheduled in the window ({}): {r:?}",
        r.published,
        s.url
    );
}

fn server() -> fanfare_net::Server {
    let mut cfg = fanfare_net::ServerConfig::default();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.engine.shards = 2;
    fanfare_net::start(cfg).unwrap()
}

#[test]
fn fixed_rate_fan_out_counts_every_delivery() {
    let srv = server();
    let s = Scenario {
        url: format!("ws://{}/v1/ws", srv.local_addr()),
        publishers: 2,
        subscribers: 20,
        topics: 2,
        payload_bytes: 64,
        rate: Some(400),
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(300),
        threads: 1,
        // The broker runs in this process: its CPU inside the window is read from /proc.
        broker_pid: Some(std::process::id()),
        ..Scenario::default()
    };
    let progress = Arc::new(Progress::default());
    let t0 = Instant::now();
    let r = run(&s, progress.clone()).expect("the run completes");
    let run_seconds = t0.elapsed().as_secs_f64();
    // 400 msg/s for 1.5 s, each to one of two topics with 10 subscribers each.
    assert_scheduled(&s, &r);
    assert_eq!(
        r.delivered,
        r.published * 10,
        "every subscriber of a topic got every message: {r:?}"
    );
    assert_eq!(
        (r.gaps, r.duplicates, r.reorders, r.discontinuities),
        (0, 0, 0, 0)
    );
    assert!(
        r.latency_us.p50 > 0.0
            && r.latency_us.p50 <= r.latency_us.p99
            && r.latency_us.p99 <= r.latency_us.max
    );
    assert_eq!(
        progress
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed),
        20
    );
    assert!(r.to_json().starts_with("{\"target\":\"ws://"));
    assert!(r.table().contains("latency (us)"));
    // The window's edges were read where the window is, not around the whole run: it lies
    // after connecting and warm-up (and its end before the run returns). How close it comes to
    // the nominal 1.5 s is the timer's accuracy under load, not something to assert here.
    let after_warmup = run_seconds - r.connect_seconds - s.warmup.as_secs_f64();
    assert!(
        r.window_seconds > 0.0 && r.window_seconds <= after_warmup + 1e-3,
        "window {} s; the run took {run_seconds} s, {} s of it connecting",
        r.window_seconds,
        r.connect_seconds
    );
    let broker = r.broker_cpu_seconds.expect("the broker's CPU was read");
    assert!(broker > 0.0 && broker < 10.0, "{broker}");
    assert!(r.to_json().contains("\"broker_cpu_seconds_window\":"));
    srv.shutdown();
}

#[test]
fn as_fast_as_possible_with_a_window() {
    let srv = server();
    let s = Scenario {
        url: format!("ws://{}/v1/ws", srv.local_addr()),
        publishers: 1,
        subscribers: 5,
        topics: 1,
        rate: None,
        window: 32,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        threads: 2,
        ..Scenario::default()
    };
    let r = run(&s, Arc::new(Progress::default())).expect("the run completes");
    // More than one window's worth: acknowledgements free the window (how many more is the
    // throughput, a benchmark's business).
    assert!(r.published > s.window as u64, "{r:?}");
    assert_eq!(r.delivered, r.published * 5, "{r:?}");
    assert_eq!((r.gaps, r.duplicates, r.reorders), (0, 0, 0));
    srv.shutdown();
}

#[test]
fn bad_scenarios_are_refused() {
    let s = Scenario {
        payload_bytes: 4,
        ..Scenario::default()
    };
    assert!(run(&s, Arc::new(Progress::default())).is_err());
    let s = Scenario {
        url: "ftp://x".into(),
        ..Scenario::default()
    };
    let e = run(&s, Arc::new(Progress::default())).unwrap_err();
    assert!(e.to_string().contains("unsupported scheme"), "{e}");
    let s = Scenario {
        url: "redis://127.0.0.1:1".into(),
        transport: Transport::Sse,
        ..Scenario::default()
    };
    assert!(run(&s, Arc::new(Progress::default())).is_err());
    // A broker that is not there: a connection error, not a hang.
    let s = Scenario {
        url: "ws://127.0.0.1:1/v1/ws".into(),
        ..Scenario::default()
    };
    let e = run(&s, Arc::new(Progress::default())).unwrap_err();
    assert!(e.to_string().contains("connection"), "{e}");
}

/// A fixed-rate fan-out through `s` (url and transport set): every delivery counted.
fn fan_out_through(mut s: Scenario) -> fanfare_bench::Report {
    s.publishers = 2;
    s.subscribers = 12;
    s.topics = 3;
    s.payload_bytes = 64;
    s.rate = Some(300);
    s.duration = Duration::from_millis(1200);
    s.warmup = Duration::from_millis(300);
    let r = run(&s, Arc::new(Progress::default())).expect("the run completes");
    assert_scheduled(&s, &r);
    assert_eq!(r.delivered, r.published * 4, "{} {r:?}", s.url);
    assert_eq!(
        (r.gaps, r.duplicates, r.reorders, r.discontinuities),
        (0, 0, 0, 0),
        "{}",
        s.url
    );
    assert!(r.latency_us.p50 > 0.0);
    r
}

#[test]
fn sse_and_http2_transports() {
    let srv = server();
    for transport in [Transport::Sse, Transport::H2] {
        fan_out_through(Scenario {
            url: format!("ws://{}", srv.local_addr()),
            transport,
            ..Scenario::default()
        });
    }
    srv.shutdown();
}

#[test]
fn tls_transports_with_a_private_ca() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("fanfare-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let mut cfg = fanfare_net::ServerConfig::default();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.engine.shards = 2;
    cfg.tls = Some(
        fanfare_net::tls_config(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap(),
    );
    let srv = fanfare_net::start(cfg).unwrap();
    let port = srv.local_addr().port();
    for transport in [Transport::Ws, Transport::Sse, Transport::H2] {
        fan_out_through(Scenario {
            url: format!("wss://localhost:{port}"),
            transport,
            ca: Some(ca_pem.clone()),
            ..Scenario::default()
        });
    }
    // Without the CA the certificate is refused; --insecure accepts it.
    let s = Scenario {
        url: format!("wss://localhost:{port}"),
        subscribers: 1,
        duration: Duration::from_millis(200),
        ..Scenario::default()
    };
    assert!(run(&s, Arc::new(Progress::default())).is_err());
    let s = Scenario {
        insecure: true,
        ..s
    };
    assert!(run(&s, Arc::new(Progress::default())).is_ok());
    srv.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer broker process on a free port, killed on drop.
struct Peer(std::process::Child, u16);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn peer(program: &str, args: &[String], port: u16) -> Peer {
    let child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("install {program} to run this test (`bash .ci/test` installs it with apt-get): {e}")
        });
    eventually::eventually(
        &format!("{program} to listen on {port}"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)),
    );
    Peer(child, port)
}

#[test]
fn redis_and_nats_targets() {
    let port = free_port();
    let redis = peer(
        "redis-server",
        &[
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ],
        port,
    );
    fan_out_through(Scenario {
        url: format!("redis://127.0.0.1:{}", redis.1),
        ..Scenario::default()
    });
    let port = free_port();
    let nats = peer(
        "nats-server",
        &[
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ],
        port,
    );
    fan_out_through(Scenario {
        url: format!("nats://127.0.0.1:{}", nats.1),
        ..Scenario::default()
    });
    // As fast as possible: windows work with batched PING/PONG acks too.
    let s = Scenario {
        url: format!("nats://127.0.0.1:{}", nats.1),
        subscribers: 3,
        rate: None,
        window: 16,
        duration: Duration::from_millis(500),
        warmup: Duration::from_millis(100),
        ..Scenario::default()
    };
    let r = run(&s, Arc::new(Progress::default())).unwrap();
    assert!(r.published > s.window as u64, "{r:?}");
    assert_eq!(r.delivered, r.published * 3, "{r:?}");
}

#[test]
fn connection_storm_and_hdr_log() {
    let srv = server();
    let log = std::env::temp_dir().join(format!("fanfare-bench-{}.hlog", std::process::id()));
    let progress = Arc::new(Progress::default());
    let s = Scenario {
        url: format!("ws://{}", srv.local_addr()),
        publishers: 1,
        subscribers: 400,
        topics: 1,
        rate: Some(200),
        duration: Duration::from_millis(2500),
        warmup: Duration::from_millis(200),
        connect_concurrency: 32,
        threads: 2,
        hdr_log: Some(log.clone()),
        ..Scenario::default()
    };
    let r = run(&s, progress.clone()).unwrap();
    assert_eq!(
        progress
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed),
        400
    );
    assert!(r.connect_seconds > 0.0);
    assert_eq!(r.delivered, r.published * 400, "{r:?}");
    // The log holds one-second intervals whose counts add up to the deliveries.
    let text = std::fs::read(&log).unwrap();
    let mut count = 0;
    let mut intervals = 0;
    for e in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&text) {
        if let hdrhistogram::serialization::interval_log::LogEntry::Interval(h) = e.unwrap() {
            let mut d = hdrhistogram::serialization::Deserializer::new();
            let bytes = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                h.encoded_histogram(),
            )
            .unwrap();
            let hist: hdrhistogram::Histogram<u64> =
                d.deserialize(&mut std::io::Cursor::new(bytes)).unwrap();
            count += hist.len();
            intervals += 1;
        }
    }
    assert!(intervals >= 2, "{intervals} intervals");
    assert_eq!(count, r.delivered);
    let _ = std::fs::remove_file(&log);
    srv.shutdown();
}
