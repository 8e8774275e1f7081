//! Idempotent publish over real sockets: a retried publish carrying the same key is answered
//! with the original position, over WebSocket and over HTTP (`Idempotency-Key`), and its
//! subscribers get the message once.

use std::time::Duration;

use bytes::Bytes;
use fanfare_proto::{ClientMsg, ServerMsg, Start};

mod common;
use common::{raw, recv, rt, send, server_with, ws};

fn publish(id: u64, topic: &str, key: Option<&str>) -> ClientMsg {
    ClientMsg::Publish {
        request_id: id,
        namespace: "ns".try_into().unwrap(),
        topic: topic.try_into().unwrap(),
        payload: Bytes::from(format!("m{id}")),
        idempotency_key: key.map(str::to_owned),
    }
}

#[test]
fn a_retried_websocket_publish_is_ordered_once() {
    let srv = server_with(|_| {});
    rt().block_on(async {
        let mut sub = ws(srv.local_addr()).await;
        send(
            &mut sub,
            ClientMsg::Subscribe {
                request_id: 1,
                namespace: "ns".try_into().unwrap(),
                topic: "idem".try_into().unwrap(),
                from: Start::Latest,
                presence: None,
            },
        )
        .await;
        assert!(matches!(recv(&mut sub).await, ServerMsg::Subscribed { .. }));
        let mut p = ws(srv.local_addr()).await;
        let mut acks = Vec::new();
        for (id, key) in [
            (1, Some("k")),
            (2, Some("k")),
            (3, None),
            (4, Some("other")),
        ] {
            send(&mut p, publish(id, "idem", key)).await;
            match recv(&mut p).await {
                ServerMsg::PublishAck {
                    request_id,
                    epoch,
                    seq,
                    ..
                } => {
                    assert_eq!(request_id, id);
                    acks.push((epoch, seq));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(acks[1], acks[0], "the retry gets the original position");
        assert_eq!(acks[2].1, acks[0].1 + 1);
        assert_eq!(acks[3].1, acks[0].1 + 2);
        // The subscriber gets m1, m3, m4: the retry (m2) was never ordered.
        let mut got = Vec::new();
        while got.len() < 3 {
            if let ServerMsg::Item(it) = recv(&mut sub).await {
                got.push(String::from_utf8_lossy(&it.payload).into_owned());
            }
        }
        assert_eq!(got, ["m1", "m3", "m4"]);
    });
    assert_eq!(srv.broker().stats_total().idempotent_repeats, 1);
}

#[test]
fn a_retried_http_publish_is_ordered_once() {
    let srv = server_with(|_| {});
    let post = |key: &str, body: &str| {
        let req = format!(
            "POST /v1/topics/ns/h HTTP/1.1\r\nContent-Length: {}\r\nIdempotency-Key: {key}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = raw(srv.local_addr(), req.as_bytes(), Duration::from_secs(5));
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        resp.split("\r\n\r\n").nth(1).unwrap().to_owned()
    };
    let first = post("order-42", "a");
    assert_eq!(post("order-42", "a"), first);
    assert_ne!(post("order-43", "b"), first);
    // A key over the limit is refused before anything is read or ordered.
    let long = "x".repeat(200);
    let req = format!(
        "POST /v1/topics/ns/h HTTP/1.1\r\nContent-Length: 1\r\nIdempotency-Key: {long}\r\nConnection: close\r\n\r\nz"
    );
    let resp = raw(srv.local_addr(), req.as_bytes(), Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(srv.broker().stats_total().publishes, 2);
}
