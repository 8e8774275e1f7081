//! Memory given back after a wave of closes, over real sockets: a shard trims once a wave of
//! connections has closed (`memory::TrimPolicy`), and not while they are open. Its own test
//! binary: it holds a few hundred sockets, which must not share a descriptor limit with the
//! other network tests.

use std::time::{Duration, Instant};

mod common;
use common::{rt, server_with, ws, WAIT};

/// More than the closes that make a wave (`memory::TRIM_AFTER_CLOSED`, 256).
const CONNECTIONS: usize = 300;

#[test]
fn a_wave_of_closes_is_followed_by_a_trim() {
    let srv = server_with(|c| c.engine.shards = 1);
    let addr = srv.local_addr();
    let metrics = srv.metrics();
    rt().block_on(async {
        let mut open = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            open.push(ws(addr).await);
        }
        let deadline = Instant::now() + WAIT;
        while metrics.total("connections_open") < CONNECTIONS as u64 {
            assert!(
                Instant::now() < deadline,
                "connections counted open in time"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            metrics.total("memory_trims"),
            0,
            "no trim while nothing closed"
        );
        drop(open);
        let deadline = Instant::now() + WAIT;
        while metrics.total("memory_trims") < 1 {
            assert!(
                Instant::now() < deadline,
                "a trim after {CONNECTIONS} closes (open: {})",
                metrics.total("connections_open")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.total("connections_open"), 0);
    });
    srv.shutdown();
}
