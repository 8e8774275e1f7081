//! What a run reports ([`Report`]), its live counters ([`Progress`]), and the HdrHistogram
//! interval log.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::scenario::{BenchError, Scenario};

/// Highest latency the histograms hold (longer ones are clamped).
pub(crate) const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Length of one interval in the HdrHistogram log.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The broker's URL.
    pub target: String,
    /// The scenario that ran (without its token).
    pub scenario: Scenario,
    /// Messages acknowledged by the broker during the measured time.
    pub published: u64,
    /// Deliveries counted (one per subscriber per message) during the measured time.
    pub delivered: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Deliveries per second.
    pub delivered_per_sec: f64,
    /// Payload bytes delivered per second.
    pub bytes_per_sec: f64,
    /// End-to-end latency, from intended send time to receipt.
    pub latency_us: Percentiles,
    /// Publish acknowledgement latency, from intended send time to the broker's ack.
    pub ack_latency_us: Percentiles,
    /// Messages missing in a subscription's broker sequence without a discontinuity.
    pub gaps: u64,
    /// Messages received twice.
    pub duplicates: u64,
    /// Messages of one publisher received out of order.
    pub reorders: u64,
    /// Discontinuities the broker announced.
    pub discontinuities: u64,
    /// Seconds until every subscriber was subscribed.
    pub connect_seconds: f64,
    /// Generator CPU seconds (user + system) inside the measured window.
    pub generator_cpu_seconds: f64,
    /// Generator CPU use inside the measured window as a fraction of its threads (1.0 =
    /// every thread busy).
    pub generator_cpu_share: f64,
    /// The broker's CPU seconds (user + system) inside the measured window, read from
    /// `/proc/<pid>/stat` at its two edges (with `--broker-pid`).
    pub broker_cpu_seconds: Option<f64>,
    /// The part of `broker_cpu_seconds` spent in the kernel (system time: its sockets, the
    /// loopback's delivery to the peer it writes to, wake-ups).
    pub broker_system_seconds: Option<f64>,
    /// The measured window as the edges were read (seconds; nominally the scenario's duration).
    pub window_seconds: f64,
}

impl Report {
    /// Whether the generator itself was near its limit (its numbers then bound the broker's).
    pub fn generator_saturated(&self) -> bool {
        self.generator_cpu_share > 0.9
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        let l = &self.latency_us;
        let a = &self.ack_latency_us;
        format!(
            "{{\"target\":\"{}\",\"scenario\":{},\"published\":{},\"delivered\":{},\"seconds\":{:.3},\"delivered_per_sec\":{:.1},\"bytes_per_sec\":{:.1},\
\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},\
\"ack_latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},\
\"gaps\":{},\"duplicates\":{},\"reorders\":{},\"discontinuities\":{},\"connect_seconds\":{:.3},\
\"generator_cpu_seconds\":{:.3},\"generator_cpu_share\":{:.3},\"generator_saturated\":{},\
\"broker_cpu_seconds_window\":{},\"broker_system_seconds_window\":{},\"window_seconds\":{:.3}}}",
            self.target.replace(['"', '\\'], ""),
            self.scenario_json(),
            self.published,
            self.delivered,
            self.seconds,
            self.delivered_per_sec,
            self.bytes_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            a.p50,
            a.p90,
            a.p99,
            a.p999,
            a.max,
            self.gaps,
            self.duplicates,
            self.reorders,
            self.discontinuities,
            self.connect_seconds,
            self.generator_cpu_seconds,
            self.generator_cpu_share,
            self.generator_saturated(),
            self.broker_cpu_seconds
                .map_or_else(|| "null".to_owned(), |c| format!("{c:.3}")),
            self.broker_system_seconds
                .map_or_else(|| "null".to_owned(), |c| format!("{c:.3}")),
            self.window_seconds,
        )
    }

    /// The scenario's shape as a JSON object.
    fn scenario_json(&self) -> String {
        let s = &self.scenario;
        format!(
            "{{\"transport\":\"{}\",\"publishers\":{},\"subscribers\":{},\"topics\":{},\
\"payload_bytes\":{},\"rate\":{},\"window\":{},\"duration_seconds\":{:.3},\"warmup_seconds\":{:.3},\
\"threads\":{}}}",
            s.transport.name(),
            s.publishers,
            s.subscribers,
            s.topics,
            s.payload_bytes,
            s.rate.map_or_else(|| "null".to_owned(), |r| r.to_string()),
            s.window,
            s.duration.as_secs_f64(),
            s.warmup.as_secs_f64(),
            s.threads,
        )
    }

    /// A human summary table, starting with the scenario that produced it.
    pub fn table(&self) -> String {
        let l = &self.latency_us;
        let mut t = format!("scenario         {}\n", self.scenario.summary());
        t += &format!(
            "published        {}\ndelivered        {} ({:.0}/s, {:.1} MB/s)\nlatency (us)     p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}\n\
gaps {}  duplicates {}  reorders {}  discontinuities {}\nconnect          {:.2} s\ngenerator CPU    {:.2} s ({:.0}% of its threads)\n",
            self.published,
            self.delivered,
            self.delivered_per_sec,
            self.bytes_per_sec / 1e6,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.gaps,
            self.duplicates,
            self.reorders,
            self.discontinuities,
            self.connect_seconds,
            self.generator_cpu_seconds,
            self.generator_cpu_share * 100.0
        );
        let a = &self.ack_latency_us;
        if self.published > 0 {
            t.push_str(&format!(
                "ack latency (us) p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}\n",
                a.p50, a.p90, a.p99, a.p999, a.max
            ));
        }
        if let Some(c) = self.broker_cpu_seconds {
            let per = if c > 0.0 {
                self.delivered as f64 / c
            } else {
                0.0
            };
            let kernel = self.broker_system_seconds.map_or_else(String::new, |k| {
                format!(", {:.0}% in the kernel", 100.0 * k / c.max(1e-9))
            });
            t.push_str(&format!(
                "broker CPU       {c:.2} s in the {:.2} s window ({per:.0} deliveries per broker CPU-s{kernel})\n",
                self.window_seconds
            ));
        }
        if self.generator_saturated() {
            t.push_str("WARNING: the generator was saturated; these figures bound the generator, not the broker\n");
        }
        t
    }
}

/// Live counters, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Publishes acknowledged so far.
    pub published: AtomicU64,
    /// Deliveries counted so far.
    pub delivered: AtomicU64,
    /// Subscribers subscribed so far.
    pub subscribed: AtomicUsize,
}

/// Writes the interval histograms (merged across threads by interval) as an HdrHistogram
/// interval log (V2, compressed).
pub(crate) fn write_hdr_log(
    path: &std::path::Path,
    url: &str,
    measure_from: u64,
    intervals: Vec<(u64, Histogram<u64>)>,
) -> Result<(), BenchError> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut merged: std::collections::BTreeMap<u64, Histogram<u64>> = Default::default();
    for (start, h) in intervals {
        let idx = start.saturating_sub(measure_from) / LOG_INTERVAL.as_nanos() as u64;
        match merged.get_mut(&idx) {
            Some(m) => {
                let _ = m.add(&h);
            }
            None => {
                merged.insert(idx, h);
            }
        }
    }
    let err = |e: String| BenchError::Runtime(format!("HdrHistogram log {}: {e}", path.display()));
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| err(e.to_string()))?);
    let mut ser = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "fanfare bench against {url}; delivery latency in ns"
        ))
        .with_start_time(std::time::SystemTime::now())
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut file, &mut ser)
        .map_err(|e| err(e.to_string()))?;
    for (idx, h) in merged {
        log.write_histogram(&h, LOG_INTERVAL * idx as u32, LOG_INTERVAL, None)
            .map_err(|e| err(e.to_string()))?;
    }
    drop(log);
    std::io::Write::flush(&mut file).map_err(|e| err(e.to_string()))
}

/// One thread's measurements.
pub(crate) struct Tally {
    pub(crate) published: u64,
    pub(crate) delivered: u64,
    pub(crate) bytes: u64,
    pub(crate) gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) reorders: u64,
    pub(crate) discontinuities: u64,
    pub(crate) latency: Histogram<u64>,
    pub(crate) ack_latency: Histogram<u64>,
}

// Cannot fail: the bounds are constants hdrhistogram accepts (low >= 1, high >= 2 * low,
// at most 5 significant digits), and every run builds two (bench/tests/loadgen.rs runs some).
#[allow(clippy::expect_used)]
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("constant, valid histogram bounds")
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            published: 0,
            delivered: 0,
            bytes: 0,
            gaps: 0,
            duplicates: 0,
            reorders: 0,
            discontinuities: 0,
            latency: latency_histogram(),
            ack_latency: latency_histogram(),
        }
    }

    pub(crate) fn merge(&mut self, o: &Tally) {
        self.published += o.published;
        self.delivered += o.delivered;
        self.bytes += o.bytes;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.reorders += o.reorders;
        self.discontinuities += o.discontinuities;
        let _ = self.latency.add(&o.latency);
        let _ = self.ack_latency.add(&o.ack_latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report says what produced it: the table's first line and the JSON's `scenario`.
    #[test]
    fn reports_start_with_their_scenario() {
        let r = Report {
            scenario: Scenario {
                publishers: 3,
                subscribers: 40,
                topics: 5,
                payload_bytes: 256,
                rate: Some(2000),
                transport: crate::Transport::Sse,
                ..Scenario::default()
            },
            ..Report::default()
        };
        let table = r.table();
        let first = table.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "scenario         sse to ws://127.0.0.1:7070/v1/ws: 3 publishers, 40 subscribers, \
             5 topics, 256-byte payloads, 2000 msg/s, window 64, 10.0 s measured after 1.0 s \
             warm-up, 1 threads"
        );
        let json = r.to_json();
        assert!(
            json.contains(
                "\"scenario\":{\"transport\":\"sse\",\"publishers\":3,\"subscribers\":40,\
                 \"topics\":5,\"payload_bytes\":256,\"rate\":2000,"
            ),
            "{json}"
        );
    }
}
