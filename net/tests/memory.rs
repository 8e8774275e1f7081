//! Memory given back after a wave of closes, over real sockets: a shard trims once a wave of
//! connections has closed (`memory::TrimPolicy`), and not while they are open. Its own test
//! binary: it holds a few hundred sockets, which must not share a descriptor limit with the
//! other network tests.

mod common;
use common::{rt, server_with, ws, WAIT};
#[path = "../../tests/common/eventually.rs"]
mod eventually;
use eventually::eventually_async;

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
        eventually_async(
            &format!("{CONNECTIONS} connections counted open"),
            WAIT,
            tokio::time::sleep,
            async || metrics.total("connections_open") >= CONNECTIONS as u64,
        )
        .await;
        assert_eq!(
            metrics.total("memory_trims"),
            0,
            "no trim while nothing closed"
        );
        drop(open);
        eventually_async(
            &format!("a trim after {CONNECTIONS} closes"),
            WAIT,
            tokio::time::sleep,
            async || match metrics.total("memory_trims") {
                0 => Err(format!("open: {}", metrics.total("connections_open"))),
                _ => Ok(()),
            },
        )
        .await;
        assert_eq!(metrics.total("connections_open"), 0);
    });
    srv.shutdown();
}
