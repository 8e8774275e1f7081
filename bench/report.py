#!/usr/bin/env python3
"""Markdown tables from the raw results of the benchmark scripts (never edited by hand).

    python3 bench/report.py compare RESULTS.jsonl [IPERF_BYTES_PER_S] [BROKER_CPUS] [GEN_CPUS] [NCPU]
    python3 bench/report.py ab RESULTS.jsonl

`compare` reads bench/compare.sh's JSON lines (one per broker and scenario), `ab` reads
bench/ab.sh's (one per build, scenario and repetition). Raw results worth keeping go to
bench/results/, and docs/benchmarks.md quotes this script's output for them.
"""
import collections
import json
import re
import statistics
import sys


def compare(args):
    """Median (min-max) of every scenario and broker over its runs, and the ratios."""
    path, iperf, broker_cpus, gen_cpus, ncpu = args[:5]
    rows = [json.loads(l) for l in open(path)]
    iperf = float(iperf) if iperf else None
    print(f"Broker on CPU {broker_cpus}, generator on CPU {gen_cpus} ({ncpu} CPUs); "
          "`delivered/CPU-s` is deliveries per second of broker CPU time, both inside the measured "
          "window when the run recorded it; median of the runs, (min-max) when there were several.\n")
    by = collections.OrderedDict()
    for r in rows:
        by.setdefault(r["scenario"], collections.OrderedDict()).setdefault(r["broker"], []).append(r)

    def span(values, fmt):
        m = statistics.median(values)
        if len(values) == 1:
            return fmt(m), m
        return f"{fmt(m)} ({fmt(min(values))}-{fmt(max(values))})", m

    print("| scenario | broker | runs | delivered/s | delivered/CPU-s | p50 us | p99 us | gaps | dups | discont. | connect s | RSS/conn KB | gen CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    medians = {}
    for sc, brokers in by.items():
        for b, runs in brokers.items():
            ok = [r for r in runs if not r.get("error") and r.get("broker_cpu_s", 0) > 0]
            if not ok:
                err = next((r.get("error") for r in runs if r.get("error")), "no run")
                print(f"| {sc} | {b} | 0 | failed: {str(err)[:120]} | | | | | | | | | |")
                continue
            num = lambda v: f"{v:,.0f}"
            rate, _ = span([r["delivered_per_sec"] for r in ok], num)
            per, per_m = span([r["delivered"] / r["broker_cpu_s"] for r in ok], num)
            p50, _ = span([r["latency_us"]["p50"] for r in ok], num)
            p99, _ = span([r["latency_us"]["p99"] for r in ok], num)
            conn = ""
            if "storm" in sc or "footprint" in sc:
                # Memory per subscriber connection; the scenario's name says how many.
                m = re.search(r"([\d,]+) subscribers", sc)
                n = int(m.group(1).replace(",", "")) if m else 10000
                conn, _ = span([(r["rss_peak_kib"] - r["rss0_kib"]) / n for r in ok], lambda v: f"{v:.1f}")
            gen = max(r["generator_cpu_share"] for r in ok)
            bound = " generator-bound" if any(r.get("generator_saturated") for r in ok) else ""
            medians[(sc, b)] = per_m
            print(f"| {sc} | {b} | {len(ok)} | {rate} | {per} | {p50} | {p99} | "
                  f"{sum(r['gaps'] for r in ok)} | {sum(r['duplicates'] for r in ok)} | "
                  f"{sum(r['discontinuities'] for r in ok)} | {statistics.median(r['connect_seconds'] for r in ok):.2f} | "
                  f"{conn} | {gen*100:.0f}%{bound} |")
    if iperf:
        print(f"\nLoopback ceiling (iperf3, same pinning): {iperf/1e6:,.0f} MB/s.")
    summary = []
    for sc, brokers in by.items():
        f = medians.get((sc, "fanfare"))
        if f is None:
            continue
        for peer, target in (("nats", 2.0), ("redis", 3.0)):
            p = medians.get((sc, peer))
            if p:
                ratio = f / p
                summary.append(f"| {sc} | {peer} | {ratio:.2f}x | {target:.0f}x | {'yes' if ratio >= target else 'no'} |")
            elif peer in brokers:
                summary.append(f"| {sc} | {peer} | {peer} failed | {target:.0f}x | n/a |")
    if summary:
        print("\nFanfare's delivered messages per broker CPU-second relative to each peer (medians):\n")
        print("| scenario | peer | Fanfare / peer | target | reached |")
        print("|---|---|---|---|---|")
        print("\n".join(summary))


def ab(args):
    rows = [json.loads(l) for l in open(args[0])]
    by = {}
    for r in rows:
        if "delivered" not in r or r["broker_cpu_s"] <= 0:
            continue
        by.setdefault(r["scenario"], {}).setdefault(r["build"], []).append(r["delivered"] / r["broker_cpu_s"])
    print("| scenario | A delivered/CPU-s (median, min-max) | B | B / A |")
    print("|---|---|---|---|")
    for sc, b in by.items():
        a, n = b.get("A", []), b.get("B", [])
        if not a or not n:
            print(f"| {sc} | {len(a)} runs | {len(n)} runs | n/a |")
            continue
        ma, mb = statistics.median(a), statistics.median(n)
        print(f"| {sc} | {ma:,.0f} ({min(a):,.0f}-{max(a):,.0f}) | {mb:,.0f} ({min(n):,.0f}-{max(n):,.0f}) | {mb/ma:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("compare", "ab"):
        sys.exit(__doc__)
    {"compare": compare, "ab": ab}[sys.argv[1]](sys.argv[2:] + [""] * 4)
