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
import statistics
import sys


def compare(args):
    rows = [json.loads(l) for l in open(args[0])]
    iperf = float(args[1]) if args[1] else None
    print(f"Broker on CPU {args[2]}, generator on CPU {args[3]} ({args[4]} CPUs); "
          "`delivered/CPU-s` is deliveries per second of broker CPU time.\n")
    by = collections.OrderedDict()
    for r in rows:
        by.setdefault(r["scenario"], {})[r["broker"]] = r
    def cell(r):
        if r.get("error"):
            return None
        return r
    print("| scenario | broker | delivered/s | delivered/CPU-s | MB/s | p50 us | p99 us | p99.9 us | gaps | dups | discont. | connect s | RSS/conn KB | gen CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    for sc, brokers in by.items():
        for b, r in brokers.items():
            if r.get("error"):
                print(f"| {sc} | {b} | failed: {r['error'][:120]} | | | | | | | | | | | |")
                continue
            cpu = r["broker_cpu_s"]
            per = r["delivered"] / cpu if cpu > 0 else float("nan")
            r["per_cpu"] = per
            l = r["latency_us"]
            conn = ""
            if "storm" in sc:
                conn = f"{(r['rss_peak_kib'] - r['rss0_kib']) / 10000:.1f}"
            sat = " sat." if r["generator_saturated"] else ""
            print(f"| {sc} | {b} | {r['delivered_per_sec']:,.0f} | {per:,.0f} | {r['bytes_per_sec']/1e6:,.1f} | "
                  f"{l['p50']:,.0f} | {l['p99']:,.0f} | {l['p999']:,.0f} | {r['gaps']} | {r['duplicates']} | "
                  f"{r['discontinuities']} | {r['connect_seconds']:.2f} | {conn} | {r['generator_cpu_share']*100:.0f}%{sat} |")
        f = brokers.get("fanfare")
        if f and not f.get("error"):
            for peer, target in (("nats", 2.0), ("redis", 3.0)):
                p = brokers.get(peer)
                if p and not p.get("error") and p.get("per_cpu", 0) > 0:
                    ratio = f["per_cpu"] / p["per_cpu"]
                    summary.append(f"| {sc} | {peer} | {ratio:.2f}x | {target:.0f}x | {'yes' if ratio >= target else 'no'} |")
                elif p:
                    summary.append(f"| {sc} | {peer} | {peer} failed | {target:.0f}x | n/a |")
    if iperf:
        print(f"\nLoopback ceiling (iperf3, same pinning): {iperf/1e6:,.0f} MB/s.")
    if summary:
        print("\nFanfare's delivered messages per broker CPU-second relative to each peer:\n")
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
