//! HTTP/2 over loopback with the `h2` client: many subscription streams on one connection,
//! publishing on the same connection, the header-list limit, and rapid open/reset cycles.

use bytes::{Bytes, BytesMut};
use fanfare_net::Server;

mod common;
use common::{server_with, WAIT};
#[path = "../../tests/common/eventually.rs"]
mod eventually;
use eventually::eventually_async;
use fanfare_proto::message::DecodeLimits;
use fanfare_proto::{framing, ServerMsg};
use http::Request;

async fn client(srv: &Server) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tcp)
        .await
        .expect("h2c prior knowledge");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn get(path: &str, sse: bool) -> Request<()> {
    let mut r = Request::get(format!("http://localhost{path}"));
    if sse {
        r = r.header("accept", "text/event-stream");
    }
    r.body(()).unwrap()
}

async fn post(send: &mut h2::client::SendRequest<Bytes>, path: &str, body: &str) -> (u16, String) {
    let req = Request::post(format!("http://localhost{path}"))
        .body(())
        .unwrap();
    let (resp, mut tx) = send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(req, false)
        .unwrap();
    tx.send_data(Bytes::from(body.to_owned()), true).unwrap();
    let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(c) = body.data().await {
        let c = c.unwrap();
        let _ = body.flow_control().release_capacity(c.len());
        out.extend_from_slice(&c);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn many_streams_share_one_connection() {
    const STREAMS: usize = 20;
    const MESSAGES: u64 = 30;
    let srv = server_with(|_| {});
    rt().block_on(async {
        let mut send = client(&srv).await;
        // Frame streams on topics t0..t19, and one SSE stream on t0.
        let mut bodies = Vec::new();
        for i in 0..STREAMS {
            let (resp, _) = send
                .clone()
                .ready()
                .await
                .unwrap()
                .send_request(get(&format!("/v1/topics/ns/t{i}"), false), true)
                .unwrap();
            let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.headers()["content-type"],
                "application/x-fanfare-frames"
            );
            bodies.push(resp.into_body());
        }
        let (resp, _) = send
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(get("/v1/topics/ns/t0", true), true)
            .unwrap();
        let mut sse = tokio::time::timeout(WAIT, resp)
            .await
            .unwrap()
            .unwrap()
            .into_body();
        // The STREAMS streams' subscriptions and the SSE one.
        eventually_async(
            "every stream's subscription",
            WAIT,
            tokio::time::sleep,
            async || srv.broker().stats_total().subscriptions > STREAMS as u64,
        )
        .await;
        // Readers consume as data arrives (as real clients do; h2 clients limit unread frames).
        let readers: Vec<_> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, mut body)| {
                tokio::spawn(async move {
                    let mut buf = BytesMut::new();
                    let mut got = Vec::new();
                    let dec = framing::Decoder::new(1 << 20);
                    while got.len() < MESSAGES as usize {
                        let chunk = tokio::time::timeout(WAIT, body.data())
                            .await
                            .unwrap()
                            .unwrap()
                            .unwrap();
                        let _ = body.flow_control().release_capacity(chunk.len());
                        buf.extend_from_slice(&chunk);
                        while let Some(f) = dec.decode(&mut buf).unwrap() {
                            match ServerMsg::decode(&f, &DecodeLimits::default()).unwrap() {
                                ServerMsg::Item(it) => got.push((it.seq, it.payload)),
                                ServerMsg::Subscribed { .. } | ServerMsg::Heartbeat { .. } => {}
                                other => panic!("{other:?}"),
                            }
                        }
                    }
                    let want: Vec<(u64, Bytes)> = (1..=MESSAGES)
                        .map(|m| (m, Bytes::from(format!("{i}:{m}"))))
                        .collect();
                    assert_eq!(got, want, "stream {i}");
                })
            })
            .collect();
        let sse_reader = tokio::spawn(async move {
            let mut text = String::new();
            while fanfare_proto::sse::parse_events(&text).0.len() < MESSAGES as usize {
                let c = tokio::time::timeout(WAIT, sse.data())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                let _ = sse.flow_control().release_capacity(c.len());
                text.push_str(std::str::from_utf8(&c).unwrap());
            }
            text
        });
        // Publish on the same connection.
        for m in 1..=MESSAGES {
            for i in 0..STREAMS {
                let (status, body) = post(
                    &mut send,
                    &format!("/v1/topics/ns/t{i}"),
                    &format!("{i}:{m}"),
                )
                .await;
                assert_eq!(status, 200, "{body}");
            }
        }
        for r in readers {
            r.await.unwrap();
        }
        let text = sse_reader.await.unwrap();
        let (events, _) = fanfare_proto::sse::parse_events(&text);
        assert_eq!(events[0].data, "0:1");
        assert_eq!(events[MESSAGES as usize - 1].data, format!("0:{MESSAGES}"));
        let (status, body) = post(&mut send, "/v1/topics/bad%2Fname/t", "x").await;
        assert_eq!(status, 400, "{body}");
        let (resp, _) = send
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(get("/healthz", false), true)
            .unwrap();
        assert_eq!(
            tokio::time::timeout(WAIT, resp)
                .await
                .unwrap()
                .unwrap()
                .status(),
            200
        );
    });
    assert!(srv.metrics().total("encodes_frames") <= 2 * STREAMS as u64 * MESSAGES);
    srv.shutdown();
}

#[test]
fn header_list_limit_and_rapid_reset_do_not_hurt_the_server() {
    let srv = server_with(|c| c.limits.header_bytes_max = 1024);
    rt().block_on(async {
        let mut send = client(&srv).await;
        // Headers over the limit: the request is refused, the connection lives on.
        let req = Request::get("http://localhost/healthz")
            .header("x-big", "a".repeat(4000))
            .body(())
            .unwrap();
        let refused = match send.clone().ready().await.unwrap().send_request(req, true) {
            Err(_) => true,
            Ok((resp, _)) => match tokio::time::timeout(WAIT, resp).await.unwrap() {
                Err(_) => true,
                Ok(r) => r.status() == 431,
            },
        };
        assert!(refused, "oversized header list accepted");
        // Rapid reset: open subscription streams and cancel them at once, many times.
        for i in 0..500 {
            let ready = match send.clone().ready().await {
                Ok(s) => s,
                Err(_) => {
                    // The server may end the connection (GOAWAY) for abuse: that is fine too.
                    send = client(&srv).await;
                    continue;
                }
            };
            let mut ready = ready;
            if let Ok((resp, _)) =
                ready.send_request(get(&format!("/v1/topics/ns/r{}", i % 7), false), true)
            {
                drop(resp); // RST_STREAM(CANCEL)
            }
        }
        // Nothing leaks: every cancelled stream's subscription goes away.
        eventually_async(
            "every cancelled stream's subscription to go",
            WAIT,
            tokio::time::sleep,
            async || match srv.broker().stats_total().subscriptions {
                0 => Ok(()),
                n => Err(format!("{n} subscriptions left")),
            },
        )
        .await;
        // And the server still serves.
        let mut fresh = client(&srv).await;
        let (status, _) = post(&mut fresh, "/v1/topics/ns/after", "ok").await;
        assert_eq!(status, 200);
    });
    srv.shutdown();
}

#[test]
fn shutdown_sends_goaway_and_ends_streams() {
    let srv = server_with(|_| {});
    rt().block_on(async {
        let send = client(&srv).await;
        let (resp, _) = send
            .clone()
            .ready()
            .await
            .unwrap()
            .send_request(get("/v1/topics/ns/bye", true), true)
            .unwrap();
        let mut body = tokio::time::timeout(WAIT, resp)
            .await
            .unwrap()
            .unwrap()
            .into_body();
        eventually_async(
            "the stream's subscription",
            WAIT,
            tokio::time::sleep,
            async || srv.broker().stats_total().subscriptions >= 1,
        )
        .await;
        let b = srv.broker().clone();
        let stopper = std::thread::spawn(move || b.shutdown());
        let mut text = String::new();
        while let Ok(Some(Ok(c))) = tokio::time::timeout(WAIT, body.data()).await {
            text.push_str(std::str::from_utf8(&c).unwrap());
        }
        assert!(
            text.contains("event: error"),
            "the stream says why it ends: {text:?}"
        );
        stopper.join().unwrap();
    });
}
