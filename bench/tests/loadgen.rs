//! The load generator against a real server over loopback.

use std::sync::Arc;
use std::time::Duration;

use fanfare_bench::{run, Progress, Scenario};

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
        ..Scenario::default()
    };
    let progress = Arc::new(Progress::default());
    let r = run(&s, progress.clone()).expect("the run completes");
    // 400 msg/s for 1.5 s, each to one of two topics with 10 subscribers each.
    assert!(
        (500..=700).contains(&r.published),
        "published {}",
        r.published
    );
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
    assert!(r.to_json().starts_with("{\"published\":"));
    assert!(r.table().contains("latency (us)"));
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
    assert!(r.published > 100, "{r:?}");
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
        url: "http://x".into(),
        ..Scenario::default()
    };
    assert!(run(&s, Arc::new(Progress::default())).is_err());
}
