//! Wire protocol: item and batch encode/decode, WebSocket frame encode, and the per-publish
//! path (a batch of 64 publishes decoded and acknowledged, the generic way and the fast way).
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanfare_proto::message::{
    encode_item, encode_item_batch, item_len, publish_ack_len, write_item, write_publish_ack,
    DecodeLimits, Durability, ItemMsg, ItemRef,
};
use fanfare_proto::ws::{self, Opcode};
use fanfare_proto::ServerMsg;
use fanfare_proto::{ClientMsg, Name};
use flatbuffers::FlatBufferBuilder;

fn item(payload: &[u8]) -> ItemRef<'_> {
    ItemRef {
        subscription_id: 7,
        epoch: 1_700_000_000_000_000,
        seq: 42,
        payload,
        publisher_id: Some("user-1"),
    }
}

fn codec(c: &mut Criterion) {
    let payload = vec![0xAB; 128];
    let lim = DecodeLimits::default();
    let mut g = c.benchmark_group("item");
    g.throughput(Throughput::Elements(1));
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    g.bench_function("encode_128B", |b| {
        b.iter(|| {
            encode_item(&mut fbb, item(black_box(&payload)));
            black_box(fbb.finished_data().len())
        })
    });
    encode_item(&mut fbb, item(&payload));
    let one = Bytes::copy_from_slice(fbb.finished_data());
    g.bench_function("decode_128B", |b| {
        b.iter(|| ServerMsg::decode(black_box(&one), &lim).is_ok())
    });
    g.finish();

    let mut g = c.benchmark_group("batch64");
    g.throughput(Throughput::Elements(64));
    let items: Vec<ItemMsg> = (0..64)
        .map(|i| ItemMsg {
            subscription_id: 7,
            epoch: 1,
            seq: i,
            payload: Bytes::from(payload.clone()),
            publisher_id: None,
        })
        .collect();
    g.bench_function("encode_128B", |b| {
        b.iter(|| {
            encode_item_batch(&mut fbb, items.iter().map(ItemRef::from));
            black_box(fbb.finished_data().len())
        })
    });
    encode_item_batch(&mut fbb, items.iter().map(ItemRef::from));
    let batch = Bytes::copy_from_slice(fbb.finished_data());
    g.bench_function("decode_128B", |b| {
        b.iter(|| ServerMsg::decode(black_box(&batch), &lim).is_ok())
    });
    g.finish();

    let mut g = c.benchmark_group("ws_frame_encode");
    for size in [128usize, 16 * 1024] {
        let body = vec![1u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| black_box(ws::encode_server_frame(Opcode::Binary, black_box(body))))
        });
    }
    g.finish();
}

/// What a connection does per read of 64 publishes: decode each, write each one's ack frame.
fn publish_path(c: &mut Criterion) {
    let lim = DecodeLimits::default();
    let frames: Vec<Bytes> = (0..64u64)
        .map(|i| {
            let m = ClientMsg::Publish {
                request_id: i,
                namespace: Name::new_unchecked("bench"),
                topic: Name::new_unchecked("room-1"),
                payload: Bytes::from(vec![0xAB; 128]),
                idempotency_key: None,
            };
            Bytes::from(m.encode_to_vec())
        })
        .collect();
    let mut g = c.benchmark_group("publish64");
    g.throughput(Throughput::Elements(64));
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    g.bench_function("decode_and_ack/generic", |b| {
        b.iter(|| {
            let mut n = 0;
            for f in &frames {
                if let Ok(ClientMsg::Publish { request_id, .. }) =
                    ClientMsg::decode_general(f, &lim)
                {
                    ServerMsg::PublishAck {
                        request_id,
                        epoch: 1,
                        seq: request_id,
                        durability: Durability::Memory,
                    }
                    .encode_into(&mut fbb);
                    n += ws::encode_server_frame(Opcode::Binary, fbb.finished_data()).len();
                }
            }
            black_box(n)
        })
    });
    g.bench_function("decode_and_ack/fast", |b| {
        b.iter(|| {
            let mut n = 0;
            for f in &frames {
                if let Ok(ClientMsg::Publish { request_id, .. }) = ClientMsg::decode(f, &lim) {
                    let len = publish_ack_len().unwrap_or(0);
                    n += ws::encode_server_frame_with(Opcode::Binary, len, |out| {
                        write_publish_ack(out, request_id, 1, request_id, Durability::Memory);
                    })
                    .len();
                }
            }
            black_box(n)
        })
    });
    g.finish();

    let payload = vec![0xAB; 128];
    let mut g = c.benchmark_group("item_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("builder_128B", |b| {
        b.iter(|| {
            encode_item(&mut fbb, item(black_box(&payload)));
            black_box(ws::encode_server_frame(Opcode::Binary, fbb.finished_data()))
        })
    });
    g.bench_function("direct_128B", |b| {
        b.iter(|| {
            let it = item(black_box(&payload));
            black_box(ws::encode_server_frame_with(
                Opcode::Binary,
                item_len(&it),
                |out| write_item(out, &it),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, codec, publish_path);
criterion_main!(benches);
