//! The network front over real loopback sockets, against a server on port 0, with clients no
//! one here wrote: tokio-tungstenite for WebSocket, curl for HTTP and SSE.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
mod common;
use common::*;
#[path = "../../tests/common/eventually.rs"]
mod eventually;
use eventually::{eventually, eventually_async};

use fanfare_proto::message::{DecodeLimits, ErrorCode};
use fanfare_proto::{ClientMsg, ServerMsg, Start};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn subscribe(ws: &mut Ws, topic: &str, from: Start) -> (u64, u64, u64) {
    send(
        ws,
        ClientMsg::Subscribe {
            request_id: 9,
            namespace: "ns".try_into().unwrap(),
            topic: topic.try_into().unwrap(),
            from,
            presence: None,
        },
    )
    .await;
    match recv(ws).await {
        ServerMsg::Subscribed {
            request_id: 9,
            subscription_id,
            epoch,
            next_seq,
            member_id: 0,
        } => (subscription_id, epoch, next_seq),
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

async fn publish(ws: &mut Ws, topic: &str, payload: &str) -> (u64, u64) {
    send(
        ws,
        ClientMsg::Publish {
            request_id: 5,
            namespace: "ns".try_into().unwrap(),
            topic: topic.try_into().unwrap(),
            payload: Bytes::from(payload.to_owned()),
            idempotency_key: None,
        },
    )
    .await;
    loop {
        match recv(ws).await {
            ServerMsg::PublishAck {
                request_id: 5,
                epoch,
                seq,
                // No data dir: the owner keeps it in memory, and says so.
                durability: fanfare_proto::Durability::Memory,
            } => return (epoch, seq),
            ServerMsg::Item(_) => {}
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

async fn item(ws: &mut Ws) -> (u64, u64, Bytes) {
    match recv(ws).await {
        ServerMsg::Item(i) => (i.epoch, i.seq, i.payload),
        other => panic!("expected an item, got {other:?}"),
    }
}

#[test]
fn websocket_publish_subscribe_and_ping() {
    let srv = server();
    rt().block_on(async {
        let mut a = ws(srv.local_addr()).await;
        let mut b = ws(srv.local_addr()).await;
        send(
            &mut a,
            ClientMsg::Hello {
                version_min: 1,
                version_max: 9,
                token: None,
            },
        )
        .await;
        assert!(matches!(
            recv(&mut a).await,
            ServerMsg::Welcome { version: 1, .. }
        ));
        let (sub_id, _, next) = subscribe(&mut a, "chat", Start::Latest).await;
        assert_eq!(next, 1);
        let (epoch, seq) = publish(&mut b, "chat", "hello").await;
        assert_eq!(seq, 1);
        match recv(&mut a).await {
            ServerMsg::Item(i) => {
                assert_eq!((i.subscription_id, i.epoch, i.seq), (sub_id, epoch, 1));
                assert_eq!(i.payload, "hello");
            }
            other => panic!("{other:?}"),
        }
        send(&mut a, ClientMsg::Ping { nonce: 77 }).await;
        assert_eq!(recv(&mut a).await, ServerMsg::Pong { nonce: 77 });
        send(
            &mut a,
            ClientMsg::Unsubscribe {
                request_id: 3,
                subscription_id: sub_id,
            },
        )
        .await;
        assert_eq!(
            recv(&mut a).await,
            ServerMsg::Unsubscribed {
                request_id: 3,
                subscription_id: sub_id
            }
        );
        send(
            &mut a,
            ClientMsg::Unsubscribe {
                request_id: 4,
                subscription_id: sub_id,
            },
        )
        .await;
        assert!(matches!(
            recv(&mut a).await,
            ServerMsg::Error {
                request_id: 4,
                code: ErrorCode::UnknownSubscription,
                ..
            }
        ));
        // Many topics on one connection.
        for t in 0..20 {
            subscribe(&mut a, &format!("m{t}"), Start::Latest).await;
        }
        for t in 0..20 {
            publish(&mut b, &format!("m{t}"), &format!("{t}")).await;
        }
        let mut got: Vec<String> = Vec::new();
        for _ in 0..20 {
            got.push(String::from_utf8(item(&mut a).await.2.to_vec()).unwrap());
        }
        got.sort_by_key(|s| s.parse::<u32>().unwrap());
        assert_eq!(got, (0..20).map(|t| t.to_string()).collect::<Vec<_>>());
        // Version negotiation failure closes with 1002.
        let mut c = ws(srv.local_addr()).await;
        send(
            &mut c,
            ClientMsg::Hello {
                version_min: 5,
                version_max: 9,
                token: None,
            },
        )
        .await;
        assert!(matches!(
            recv(&mut c).await,
            ServerMsg::Error {
                code: ErrorCode::UnsupportedVersion,
                ..
            }
        ));
        let close = tokio::time::timeout(WAIT, c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            matches!(&close, Message::Close(Some(f)) if f.code == CloseCode::Protocol),
            "{close:?}"
        );
    });
    srv.shutdown();
}

#[test]
fn resume_by_sequence_and_by_last_event_id() {
    let srv = server();
    let addr = srv.local_addr();
    rt().block_on(async {
        let mut p = ws(addr).await;
        let mut epoch = 0;
        for i in 1..=5 {
            epoch = publish(&mut p, "resume", &format!("m{i}")).await.0;
        }
        let mut s = ws(addr).await;
        let (_, e, next) = subscribe(&mut s, "resume", Start::At { epoch, seq: 3 }).await;
        assert_eq!((e, next), (epoch, 3));
        for i in 3..=5 {
            assert_eq!(item(&mut s).await.1, i);
        }
        // Outside history (another epoch): one discontinuity, then the whole history.
        let mut d = ws(addr).await;
        subscribe(
            &mut d,
            "resume",
            Start::At {
                epoch: epoch - 1,
                seq: 40,
            },
        )
        .await;
        match recv(&mut d).await {
            ServerMsg::Discontinuity {
                last_seq: 39,
                new_seq: 1,
                new_epoch,
                ..
            } => assert_eq!(new_epoch, epoch),
            other => panic!("expected a discontinuity, got {other:?}"),
        }
        for i in 1..=5 {
            assert_eq!(item(&mut d).await.1, i);
        }
    });
    // SSE: Last-Event-ID is the last event seen; the stream resumes after it.
    let (out, err) = curl(&[
        "-N",
        "-H",
        "Accept: text/event-stream",
        "-H",
        &format!(
            "Last-Event-ID: {}-3",
            srv.broker()
                .publish_blocking("ns", "resume", "m6")
                .unwrap()
                .epoch
                .0
        ),
        &format!("http://{addr}/v1/topics/ns/resume"),
        "--max-time",
        "1",
    ]);
    let (events, _) = fanfare_proto::sse::parse_events(&out);
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, vec!["m4", "m5", "m6"], "stderr: {err}");
    srv.shutdown();
}

/// Reads a chunked HTTP stream of length-prefixed frames until `n` items arrived.
fn frames_stream(addr: SocketAddr, path: &str, n: usize) -> std::thread::JoinHandle<Vec<u64>> {
    let path = path.to_owned();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let k = s.read(&mut buf).expect("stream stays open");
            assert!(k > 0, "stream ended early");
            raw.extend_from_slice(&buf[..k]);
            // De-chunk whatever is complete, then de-frame.
            let text_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
            let mut body = Vec::new();
            let mut at = text_end + 4;
            while let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") {
                let len =
                    usize::from_str_radix(std::str::from_utf8(&raw[at..at + eol]).unwrap(), 16)
                        .unwrap();
                if raw.len() < at + eol + 2 + len + 2 {
                    break;
                }
                body.extend_from_slice(&raw[at + eol + 2..at + eol + 2 + len]);
                at += eol + 2 + len + 2;
            }
            let mut b = bytes::BytesMut::from(&body[..]);
            seqs.clear();
            while let Ok(Some(f)) = fanfare_proto::framing::Decoder::new(1 << 20).decode(&mut b) {
                if let Ok(ServerMsg::Item(i)) = ServerMsg::decode(&f, &DecodeLimits::default()) {
                    seqs.push(i.seq);
                }
            }
        }
        seqs
    })
}

#[test]
fn mixed_transports_share_one_encode_per_shard() {
    const WS_SUBS: usize = 40;
    const MESSAGES: u64 = 25;
    let srv = server();
    let addr = srv.local_addr();
    let sse = std::thread::spawn(move || {
        curl(&[
            "-N",
            "-H",
            "Accept: text/event-stream",
            &format!("http://{addr}/v1/topics/ns/mixed"),
            "--max-time",
            "3",
        ])
        .0
    });
    let frames = frames_stream(addr, "/v1/topics/ns/mixed", MESSAGES as usize);
    rt().block_on(async {
        let mut subs = Vec::new();
        for _ in 0..WS_SUBS {
            let mut w = ws(addr).await;
            subscribe(&mut w, "mixed", Start::Latest).await;
            subs.push(w);
        }
        // Wait until the HTTP streams are subscribed too.
        eventually_async(
            "the HTTP streams to subscribe",
            WAIT,
            tokio::time::sleep,
            async || srv.broker().stats_total().subscriptions >= WS_SUBS as u64 + 2,
        )
        .await;
        for i in 1..=MESSAGES {
            // Half over HTTP POST, half over the engine API.
            if i % 2 == 0 {
                let (out, _) = curl(&[
                    "-XPOST",
                    "--data-binary",
                    &format!("m{i}"),
                    &format!("http://{addr}/v1/topics/ns/mixed"),
                ]);
                assert!(out.contains(&format!("\"seq\":{i}")), "{out}");
            } else {
                srv.broker()
                    .publish_blocking("ns", "mixed", format!("m{i}"))
                    .unwrap();
            }
        }
        for w in subs.iter_mut() {
            for i in 1..=MESSAGES {
                let (_, seq, payload) = item(w).await;
                assert_eq!((seq, payload), (i, Bytes::from(format!("m{i}"))));
            }
        }
    });
    assert_eq!(frames.join().unwrap(), (1..=MESSAGES).collect::<Vec<_>>());
    let (events, _) = fanfare_proto::sse::parse_events(&sse.join().unwrap());
    let data: Vec<String> = events
        .iter()
        .filter(|e| e.event == "item")
        .map(|e| e.data.clone())
        .collect();
    assert_eq!(
        data,
        (1..=MESSAGES).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    // Zero-copy fan-out: encodes per message per shard stay at one per encoding, however many
    // subscribers; deliveries are one per subscriber.
    let m = srv.metrics();
    let shards = srv.broker().shards() as u64;
    assert!(
        m.total("encodes_ws") <= MESSAGES * shards,
        "ws encodes {}",
        m.total("encodes_ws")
    );
    assert!(m.total("encodes_ws") >= MESSAGES);
    assert_eq!(m.total("encodes_sse"), MESSAGES);
    assert_eq!(m.total("encodes_frames"), MESSAGES);
    // Publish-to-delivery latency is recorded once per encode and exposed once the shard's
    // snapshot (every second) has caught up.
    let encodes = m.total("encodes_ws") + m.total("encodes_sse") + m.total("encodes_frames");
    let scraped_count = || -> u64 {
        curl(&[&format!("http://{addr}/metrics")])
            .0
            .lines()
            .filter(|l| l.starts_with("fanfare_delivery_latency_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    eventually(
        &format!("the latency count to reach {encodes}"),
        WAIT,
        || {
            let n = scraped_count();
            if n == encodes {
                Ok(())
            } else {
                Err(n)
            }
        },
    );
    assert!(m.latency_quantile_us(0.5) > 0);
    let text = curl(&[&format!("http://{addr}/metrics")]).0;
    assert!(
        text.contains("# TYPE fanfare_delivery_latency_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("fanfare_delivery_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"}"));
    assert_eq!(m.total("deliveries"), MESSAGES * (WS_SUBS as u64 + 2));
    srv.shutdown();
}

#[test]
fn http_api_answers_and_errors() {
    let srv = server_with(|c| {
        c.engine.message_bytes_max = 100;
        c.limits.header_bytes_max = 1024;
    });
    let a = srv.local_addr();
    assert_eq!(curl(&[&format!("http://{a}/healthz")]).0, "ok");
    let code = |args: &[&str]| curl(&[&["-o", "/dev/null", "-w", "%{http_code}"], args].concat()).0;
    assert_eq!(code(&[&format!("http://{a}/nope")]), "404");
    assert_eq!(
        code(&["-XDELETE", &format!("http://{a}/v1/topics/ns/t")]),
        "405"
    );
    assert_eq!(
        code(&[
            "-XPOST",
            "--data-binary",
            "x",
            &format!("http://{a}/v1/topics/bad%2Fns/t")
        ]),
        "400"
    );
    assert_eq!(
        code(&[
            "-XPOST",
            "--data-binary",
            &"x".repeat(101),
            &format!("http://{a}/v1/topics/ns/t")
        ]),
        "413"
    );
    assert_eq!(
        code(&[
            "-H",
            &format!("X-Big: {}", "a".repeat(2000)),
            &format!("http://{a}/healthz")
        ]),
        "431"
    );
    assert_eq!(
        code(&[&format!("http://{a}/v1/topics/ns/t?from=bogus")]),
        "400"
    );
    let metrics = curl(&[&format!("http://{a}/metrics")]).0;
    assert!(
        metrics.contains("# TYPE fanfare_net_limit_header_size_total counter"),
        "{metrics}"
    );
    assert!(metrics.contains("fanfare_net_limit_message_size_total{shard="));
    srv.shutdown();
}

#[test]
fn websocket_limits_close_only_the_offender() {
    let srv = server_with(|c| {
        c.engine.message_bytes_max = 1000;
        c.limits.frame_bytes_max = 2000;
        c.limits.subscriptions_per_connection_max = 3;
    });
    let a = srv.local_addr();
    rt().block_on(async {
        let mut good = ws(a).await;
        subscribe(&mut good, "lim", Start::Latest).await;
        // Subscriptions per connection.
        let mut s = ws(a).await;
        for t in 0..3 {
            subscribe(&mut s, &format!("s{t}"), Start::Latest).await;
        }
        send(&mut s, ClientMsg::Subscribe { request_id: 1, namespace: "ns".try_into().unwrap(), topic: "s9".try_into().unwrap(), from: Start::Latest, presence: None }).await;
        assert!(matches!(recv(&mut s).await, ServerMsg::Error { request_id: 1, code: ErrorCode::TooManySubscriptions, .. }));
        send(&mut s, ClientMsg::Subscribe { request_id: 2, namespace: "ns".try_into().unwrap(), topic: "s0".try_into().unwrap(), from: Start::Latest, presence: None }).await;
        let r = recv(&mut s).await;
        assert!(matches!(r, ServerMsg::Error { request_id: 2, code: ErrorCode::AlreadySubscribed, .. }), "{r:?}");
        // Bad names and oversized payloads inside a frame: an error, the connection stays.
        send(&mut s, ClientMsg::Publish { request_id: 3, namespace: "ns".try_into().unwrap(), topic: "t".try_into().unwrap(), payload: Bytes::from(vec![0u8; 1001]), idempotency_key: None }).await;
        assert!(matches!(recv(&mut s).await, ServerMsg::Error { code: ErrorCode::MessageTooLarge, .. }));
        // A frame over the frame limit: close 1009.
        s.send(Message::Binary(vec![0u8; 2001])).await.unwrap();
        let close = loop {
            match tokio::time::timeout(WAIT, s.next()).await.unwrap() {
                Some(Ok(Message::Close(c))) => break c,
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(close.map(|c| c.code), Some(CloseCode::Size));
        // Text frames: 1003. Garbage binary: error then 1008.
        let mut t = ws(a).await;
        t.send(Message::Text("hi".into())).await.unwrap();
        assert!(matches!(tokio::time::timeout(WAIT, t.next()).await.unwrap(), Some(Ok(Message::Close(Some(c)))) if c.code == CloseCode::Unsupported));
        let mut g = ws(a).await;
        g.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
        assert!(matches!(recv(&mut g).await, ServerMsg::Error { code: ErrorCode::BadRequest, .. }));
        assert!(matches!(tokio::time::timeout(WAIT, g.next()).await.unwrap(), Some(Ok(Message::Close(Some(c)))) if c.code == CloseCode::Policy));
        // The innocent connection still works.
        let mut p = ws(a).await;
        publish(&mut p, "lim", "still here").await;
        assert_eq!(item(&mut good).await.2, "still here");
    });
    srv.shutdown();
}

#[test]
fn handshake_idle_and_pong_timeouts() {
    let srv = server_with(|c| {
        c.limits.handshake_timeout = Duration::from_millis(200);
        c.limits.idle_timeout = Duration::from_millis(300);
        c.limits.ping_interval = Duration::from_millis(100);
        c.limits.pong_timeout = Duration::from_millis(200);
    });
    let a = srv.local_addr();
    // Handshake: a partial request head is answered 408 (the handshake limit's answer, and
    // counted as one) and closed.
    let r = raw(a, b"GET /healthz HTTP/1.1\r\nHost:", WAIT);
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert_eq!(srv.metrics().total("limit_handshake_time"), 1);
    // Pong timeout: a raw client that upgrades and never answers pings is closed.
    let (req, _) = fanfare_proto::ws::client_request("x", "/v1/ws", [3; 16], &[]);
    let r = raw(a, req.as_bytes(), WAIT);
    assert!(r.contains("101 Switching Protocols"));
    assert!(
        r.contains("pong timeout") || r.contains("idle timeout"),
        "{r:?}"
    );
    // Idle: a well-behaved client (answers pings) with no subscription is closed when idle.
    rt().block_on(async {
        let mut w = ws(a).await;
        let close = loop {
            match tokio::time::timeout(WAIT, w.next()).await.unwrap() {
                Some(Ok(Message::Close(c))) => break c,
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            close.map(|c| c.reason.to_string()),
            Some("idle timeout".into())
        );
    });
    assert!(srv.metrics().total("limit_handshake_time") >= 1);
    assert!(srv.metrics().total("limit_idle") + srv.metrics().total("limit_pong") >= 2);
    srv.shutdown();
}

#[test]
fn connection_limit_answers_503() {
    let srv = server_with(|c| {
        c.engine.shards = 1;
        c.limits.connections_max = 2;
    });
    let a = srv.local_addr();
    let _c1 = TcpStream::connect(a).unwrap();
    let _c2 = TcpStream::connect(a).unwrap();
    // Both accepted (and holding their places) before the third comes.
    eventually("the two connections to be accepted", WAIT, || {
        srv.metrics().total("connections_open") >= 2
    });
    let r = raw(a, b"GET /healthz HTTP/1.1\r\n\r\n", Duration::from_secs(3));
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert_eq!(srv.metrics().total("connections_refused"), 1);
    srv.shutdown();
}

#[test]
fn stalled_reader_is_cut_off_without_slowing_others() {
    let srv = server_with(|c| {
        // History holds the whole flood, so a subscriber that briefly lags catches up gaplessly.
        c.engine.history_bytes_max = 64 << 20;
        c.engine.history_messages_max = 10_000;
        c.limits.send_queue_bytes_max = 64 * 1024;
        c.limits.slow_deadline = Duration::from_millis(500);
    });
    let a = srv.local_addr();
    // A raw client that subscribes and then never reads.
    let mut stalled = TcpStream::connect(a).unwrap();
    let (req, _) = fanfare_proto::ws::client_request("x", "/v1/ws", [5; 16], &[]);
    stalled.write_all(req.as_bytes()).unwrap();
    let sub = ClientMsg::Subscribe {
        request_id: 1,
        namespace: "ns".try_into().unwrap(),
        topic: "flood".try_into().unwrap(),
        from: Start::Latest,
        presence: None,
    };
    let mut frame = bytes::BytesMut::new();
    fanfare_proto::ws::encode_frame(
        &mut frame,
        fanfare_proto::ws::Opcode::Binary,
        true,
        &sub.encode_to_vec(),
        Some([1, 2, 3, 4]),
    );
    stalled.write_all(&frame).unwrap();
    rt().block_on(async {
        let mut fast = ws(a).await;
        subscribe(&mut fast, "flood", Start::Latest).await;
        eventually_async("both subscriptions", WAIT, tokio::time::sleep, async || {
            srv.broker().stats_total().subscriptions >= 2
        })
        .await;
        let payload = "x".repeat(16 * 1024);
        let n = 1000u64; // 16 MB: far past socket buffers and the 64 KiB queue
        let publisher = {
            let b = srv.broker().clone();
            std::thread::spawn(move || {
                for _ in 0..n {
                    b.publish_blocking("ns", "flood", payload.clone()).unwrap();
                }
            })
        };
        for i in 1..=n {
            let (_, seq, _) = item(&mut fast).await;
            assert_eq!(seq, i, "the fast subscriber is neither slowed nor gapped");
        }
        publisher.join().unwrap();
    });
    eventually("the stalled connection to be closed", WAIT, || {
        srv.metrics().total("closed_slow") > 0
    });
    assert!(srv.metrics().total("slow_events") >= 1);
    srv.shutdown();
}

#[test]
fn graceful_shutdown_closes_subscribers_with_1001() {
    let srv = server();
    let a = srv.local_addr();
    let sse = std::thread::spawn(move || {
        curl(&[
            "-N",
            "-H",
            "Accept: text/event-stream",
            &format!("http://{a}/v1/topics/ns/bye"),
            "--max-time",
            "5",
        ])
        .0
    });
    rt().block_on(async {
        let mut w = ws(a).await;
        subscribe(&mut w, "bye", Start::Latest).await;
        eventually_async("both subscriptions", WAIT, tokio::time::sleep, async || {
            srv.broker().stats_total().subscriptions >= 2
        })
        .await;
        srv.broker()
            .publish_blocking("ns", "bye", "last words")
            .unwrap();
        let stopper = std::thread::spawn({
            let b = srv.broker().clone();
            move || b.shutdown()
        });
        assert_eq!(item(&mut w).await.2, "last words");
        let close = loop {
            match tokio::time::timeout(WAIT, w.next()).await.unwrap() {
                Some(Ok(Message::Close(c))) => break c,
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(close.map(|c| c.code), Some(CloseCode::Away));
        // The shutdown completes (how fast it drains is for a benchmark, not a test).
        eventually_async(
            "the shutdown to finish",
            WAIT,
            tokio::time::sleep,
            async || stopper.is_finished(),
        )
        .await;
        stopper.join().unwrap();
    });
    let out = sse.join().unwrap();
    assert!(out.contains("data: last words"), "{out}");
    assert!(
        out.contains("event: error"),
        "the SSE stream says why it ends: {out}"
    );
}

#[test]
fn a_burst_goes_out_in_few_writes() {
    const BURST: u64 = 2000;
    let srv = server_with(|c| c.engine.shards = 1);
    let a = srv.local_addr();
    rt().block_on(async {
        let mut w = ws(a).await;
        subscribe(&mut w, "burst", Start::Latest).await;
        let before = srv.metrics().total("writes");
        // Publish the whole burst inside the shard, before its connection writer runs.
        let (tx, rx) = std::sync::mpsc::channel();
        srv.broker()
            .run_on(0, move |h| {
                for i in 0..BURST {
                    drop(h.publish(
                        h.topic_key("ns", "burst").unwrap(),
                        Bytes::from(format!("{i}")),
                        Default::default(),
                    ));
                }
                let _ = tx.send(());
            })
            .unwrap();
        rx.recv_timeout(WAIT).unwrap();
        for i in 1..=BURST {
            assert_eq!(item(&mut w).await.1, i);
        }
        let writes = srv.metrics().total("writes") - before;
        assert!(writes <= 10, "{BURST} frames took {writes} writes");
    });
    srv.shutdown();
}

#[test]
fn topic_limit_is_429_over_http() {
    let srv = server_with(|c| {
        c.engine.shards = 1;
        c.engine.topics_per_shard_max = 1;
    });
    let a = srv.local_addr();
    let code = |topic: &str| {
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-XPOST",
            "--data-binary",
            "x",
            &format!("http://{a}/v1/topics/ns/{topic}"),
        ])
        .0
    };
    assert_eq!(code("first"), "200");
    assert_eq!(code("second"), "429");
    assert_eq!(code("first"), "200");
    srv.shutdown();
}

/// A client that floods requests and never reads the answers must be stopped by
/// backpressure (the server stops reading), not buffered without limit.
#[test]
fn request_flood_without_reading_is_back_pressured() {
    let srv = server_with(|c| {
        c.limits.send_queue_bytes_max = 64 * 1024;
        c.limits.slow_deadline = Duration::from_secs(30);
        c.limits.pong_timeout = Duration::from_secs(30);
    });
    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    let (req, _) = fanfare_proto::ws::client_request("x", "/v1/ws", [4; 16], &[]);
    s.write_all(req.as_bytes()).unwrap();
    // 64 MiB of WebSocket pings (each answered by a pong the client never reads).
    let mut one = bytes::BytesMut::new();
    fanfare_proto::ws::encode_frame(
        &mut one,
        fanfare_proto::ws::Opcode::Ping,
        true,
        &[7u8; 125],
        Some([1, 2, 3, 4]),
    );
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 8192).collect();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut sent = 0usize;
    let blocked = loop {
        if sent >= 64 << 20 {
            break false;
        }
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break true,
        }
    };
    assert!(
        blocked,
        "the server read {sent} bytes of requests while their answers piled up"
    );
    srv.shutdown();
}

/// Regression: a session's read loop polls the shutdown signal each time a read waits; each
/// poll used to keep another waker, and after 32,767 waits glommio's waker count overflowed
/// and panicked the shard.
#[test]
fn forty_thousand_round_trips_on_one_connection() {
    let srv = server_with(|c| c.engine.shards = 1);
    rt().block_on(async {
        let mut c = ws(srv.local_addr()).await;
        // One ping at a time: the server's read waits before every message.
        for nonce in 0..40_000u64 {
            send(&mut c, ClientMsg::Ping { nonce }).await;
            assert_eq!(recv(&mut c).await, ServerMsg::Pong { nonce });
        }
    });
    // The shard is alive: a new connection is served.
    rt().block_on(async {
        let mut c = ws(srv.local_addr()).await;
        send(&mut c, ClientMsg::Ping { nonce: 1 }).await;
        assert_eq!(recv(&mut c).await, ServerMsg::Pong { nonce: 1 });
    });
}

/// A sample's value in a Prometheus text exposition (None when absent).
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn tasks_are_named_counted_and_exported() {
    let srv = server_with(|c| c.engine.shards = 1);
    let a = srv.local_addr();
    let scrape = || curl(&[&format!("http://{a}/metrics")]).0;
    let running = |text: &str, task: &str| {
        sample(
            text,
            &format!("fanfare_tasks_running{{shard=\"0\",task=\"{task}\"}}"),
        )
    };
    // The shard's own loops, each once, in their queues; no log without a data dir.
    let text = scrape();
    for task in ["tick", "control", "accept", "conn_sweep", "admin"] {
        assert_eq!(running(&text, task), Some(1), "{task}: {text}");
    }
    assert_eq!(running(&text, "store"), Some(0));
    // Two connections (and the scrape's own) are counted while they are open, and not after.
    let c1 = TcpStream::connect(a).unwrap();
    let c2 = TcpStream::connect(a).unwrap();
    eventually("two connections and the scrape to be counted", WAIT, || {
        running(&scrape(), "connection") == Some(3)
    });
    drop((c1, c2));
    eventually("the closed connections to leave the count", WAIT, || {
        running(&scrape(), "connection") == Some(1)
    });
    let text = scrape();
    assert!(
        sample(
            &text,
            "fanfare_tasks_started_total{shard=\"0\",task=\"connection\"}"
        )
        .is_some_and(|n| n >= 4),
        "{text}"
    );
    // No task the shard depends on ended.
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("fanfare_tasks_failed_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    srv.shutdown();
}
