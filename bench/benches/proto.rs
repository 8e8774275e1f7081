//! Wire protocol: item and batch encode/decode, WebSocket frame encode.
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanfare_proto::message::{encode_item, encode_item_batch, DecodeLimits, ItemMsg, ItemRef};
use fanfare_proto::ws::{self, Opcode};
use fanfare_proto::ServerMsg;
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

criterion_group!(benches, codec);
criterion_main!(benches);
