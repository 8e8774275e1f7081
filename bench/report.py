#!/usr/bin/env python3
"""Markdown tables from the raw results of the benchmark scripts (never edited by hand).

    python3 bench/report.py compare RESULTS.jsonl [IPERF_BYTES_PER_S] [BROKER_CPUS] [GEN_CPUS] [NCPU]
    python3 bench/report.py ab RESULTS.jsonl
    python3 bench/report.py durable RESULTS.jsonl
    python3 bench/report.py ab-durable RESULTS.jsonl
    python3 bench/report.py delta BEFORE.jsonl AFTER.jsonl
    python3 bench/report.py memory RESULTS.jsonl

`compare` reads bench/compare.sh's JSON lines (one per broker and scenario), `ab` reads
bench/ab.sh's (one per build, scenario and repetition), `durable` bench/durable.sh's,
`ab-durable` bench/ab-durable.sh's, `delta` two compare.sh files (before and after a
change), `memory` bench/memory-return.sh's. Raw results worth keeping go to
bench/results/, and docs/benchmarks.md quotes this script's output for them.
"""
import collections
import json
import re
import statistics
import sys


def issue_target(scenario, peer, whole):
    """The per-CPU-second ratio issue 20 asks of Fanfare for a scenario, or None where it
    names none (storms and footprints are about memory and connect time)."""
    one = re.match(r"fan-out: 1 publisher, 1 topic, 1 subscribers", scenario)
    fan = re.match(r"fan-out: 1 publisher, 1 topic, (1|100|1000) subscribers", scenario)
    many = scenario.startswith("many topics")
    if whole:
        return 1.5 if peer == "nats" and (one or many) else None
    if fan or many:
        return {"nats": 2.0, "redis": 3.0}[peer]
    return None


def compare(args):
    """Median (min-max) of every scenario and broker over its runs, and the ratios."""
    path, iperf, broker_cpus, gen_cpus, ncpu = args[:5]
    rows = [json.loads(l) for l in open(path)]
    iperf = float(iperf) if iperf else None
    whole = any(r.get("mode") == "whole" for r in rows)
    if whole:
        where = (f"Whole machine ({ncpu} CPUs): every broker at its own defaults on all of them, "
                 "the generator unpinned beside it")
    elif broker_cpus and gen_cpus:
        where = f"Broker on CPU {broker_cpus}, generator on CPU {gen_cpus} ({ncpu} CPUs)"
    else:
        # Tables made again from a results file: compare.sh passes the CPUs, a reader may not.
        where = "Broker and generator on their own CPUs (see the command above the table)"
    print(f"{where}; "
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

    print("| scenario | broker | runs | delivered/s | delivered/CPU-s | p50 us | p99 us | gaps | dups | discont. | connect s | RSS/conn KB | gen CPU | kernel |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    medians = {}
    # The broker's kernel share of its CPU in the window (runs that recorded system time).
    kernel = {}
    for sc, brokers in by.items():
        for b, runs in brokers.items():
            ok = [r for r in runs if not r.get("error") and r.get("broker_cpu_s", 0) > 0]
            if not ok:
                err = next((r.get("error") for r in runs if r.get("error")), "no run")
                print(f"| {sc} | {b} | 0 | failed: {str(err)[:120]} | | | | | | | | | | |")
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
            sys_share = [r["broker_system_seconds_window"] / r["broker_cpu_s"] for r in ok
                         if r.get("broker_system_seconds_window") is not None]
            ks = ""
            if sys_share:
                kernel[(sc, b)] = statistics.median(sys_share)
                ks, _ = span([100 * v for v in sys_share], lambda v: f"{v:.0f}%")
            print(f"| {sc} | {b} | {len(ok)} | {rate} | {per} | {p50} | {p99} | "
                  f"{sum(r['gaps'] for r in ok)} | {sum(r['duplicates'] for r in ok)} | "
                  f"{sum(r['discontinuities'] for r in ok)} | {statistics.median(r['connect_seconds'] for r in ok):.2f} | "
                  f"{conn} | {gen*100:.0f}%{bound} | {ks} |")
    if iperf:
        print(f"\nLoopback ceiling (iperf3, same pinning): {iperf/1e6:,.0f} MB/s.")
    summary = []
    for sc, brokers in by.items():
        f = medians.get((sc, "fanfare"))
        if f is None:
            continue
        for peer in ("nats", "redis"):
            target = issue_target(sc, peer, whole)
            shown = f"{target:g}x" if target else ""
            p = medians.get((sc, peer))
            if p:
                ratio = f / p
                reached = ("yes" if ratio >= target else "no") if target else ""
                # What Fanfare's figure would be with no time in user space at all: its
                # kernel time per delivery alone (sockets, loopback, wake-ups).
                k = kernel.get((sc, "fanfare"))
                ceiling = f"{ratio / k:.2f}x" if k else ""
                # Kernel nanoseconds per delivery, Fanfare's and the peer's.
                kp = kernel.get((sc, peer))
                kns = (f"{1e9 * k / f:,.0f} / {1e9 * kp / p:,.0f}" if k and kp else "")
                summary.append(f"| {sc} | {peer} | {ratio:.2f}x | {shown} | {reached} | {ceiling} | {kns} |")
            elif peer in brokers:
                summary.append(f"| {sc} | {peer} | {peer} failed | {shown} | n/a | | |")
    if summary:
        print("\nFanfare's delivered messages per broker CPU-second relative to each peer (medians); "
              "`ceiling` is the ratio Fanfare would reach if its user-space time were zero "
              "(its kernel time per delivery unchanged):\n")
        print("| scenario | peer | Fanfare / peer | target | reached | ceiling | kernel ns per delivery, Fanfare / peer |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(summary))


def delta(args):
    """Two compare.sh results files, before and after a change: Fanfare's median delivered per
    broker CPU-second in each, their ratio, and each against NATS (the NATS runs of either
    file; the after file's when both have them)."""
    def medians(path):
        by = collections.defaultdict(list)
        for l in open(path):
            r = json.loads(l)
            if not r.get("error") and r.get("broker_cpu_s", 0) > 0:
                by[(r["scenario"], r["broker"])].append(r["delivered"] / r["broker_cpu_s"])
        return {k: statistics.median(v) for k, v in by.items()}
    before, after = medians(args[0]), medians(args[1])
    print("| scenario | Fanfare before | Fanfare after | after / before | before / NATS | after / NATS |")
    print("|---|---|---|---|---|---|")
    for (sc, b) in after:
        if b != "fanfare":
            continue
        f0, f1 = before.get((sc, "fanfare")), after[(sc, "fanfare")]
        nats = after.get((sc, "nats")) or before.get((sc, "nats"))
        cell = lambda x: f"{x:,.0f}" if x else "n/a"
        vs = lambda x: f"{x / nats:.2f}x" if x and nats else "n/a"
        print(f"| {sc} | {cell(f0)} | {cell(f1)} | {f'{f1 / f0:.2f}' if f0 else 'n/a'} | {vs(f0)} | {vs(f1)} |")


def memory(args):
    """bench/memory-return.sh: RSS after storms relative to the idle RSS before them."""
    rows = [json.loads(l) for l in open(args[0])]
    print("| run | connections | idle RSS KiB (anon + file) | after storm 1 | after storm 2 | storm 2 / idle |")
    print("|---|---|---|---|---|---|")
    ratios, anon = [], []
    for r in rows:
        idle = r["idle"]
        cells = []
        for a in r["after"]:
            ratios.append(a["VmRSS"] / idle["VmRSS"])
            anon.append(a["RssAnon"] - idle["RssAnon"])
            cells.append(f"{a['VmRSS']:,} ({a['RssAnon']:,} + {a['RssFile']:,})")
        print(f"| {r['run']} | {r['connections']:,} | {idle['VmRSS']:,} ({idle['RssAnon']:,} + {idle['RssFile']:,}) | "
              f"{cells[0]} | {cells[1]} | {r['after'][1]['VmRSS'] / idle['VmRSS']:.2f} |")
    if ratios:
        over = [(x - 1) * 100 for x in ratios]
        print(f"\nRSS after a storm, above the idle RSS before it (every storm of every run): median "
              f"{statistics.median(over):.1f}%, min {min(over):.1f}%, max {max(over):.1f}% (target: at most 20%).")
        print(f"Heap and stacks (RssAnon) above idle: median {statistics.median(anon):,.0f} KiB, "
              f"min {min(anon):,}, max {max(anon):,}; the mapped binary (RssFile) moves with the "
              f"page cache, so compare builds by this line when their idle RssFile differs.")


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


def durable(args):
    """Acknowledged publishes per second and ack latency per broker and publisher count, the
    disk's sync latency, and the catch-up read rate."""
    rows = [json.loads(l) for l in open(args[0])]
    runs = collections.OrderedDict()
    for r in rows:
        if "published" in r:
            runs.setdefault(r["scenario"], collections.OrderedDict()).setdefault(r["broker"], []).append(r)

    def span(values, fmt):
        m = statistics.median(values)
        return (fmt(m) if len(values) == 1 else f"{fmt(m)} ({fmt(min(values))}-{fmt(max(values))})"), m

    num = lambda v: f"{v:,.0f}"
    print("Acknowledged publishes per second (each publisher waits for its ack), median of the runs "
          "(min-max); ack latency from send to acknowledgement; broker CPU inside the measured window.\n")
    print("| scenario | broker | runs | acked/s | ack p50 us | ack p99 us | acked/CPU-s |")
    print("|---|---|---|---|---|---|---|")
    med = {}
    for sc, brokers in runs.items():
        for b, rs in brokers.items():
            ok = [r for r in rs if r.get("seconds") and r.get("published", 0) > 0]
            if not ok:
                print(f"| {sc} | {b} | 0 | failed | | | |")
                continue
            rate, m = span([r["published"] / r["seconds"] for r in ok], num)
            p50, _ = span([r["ack_latency_us"]["p50"] for r in ok], num)
            p99, _ = span([r["ack_latency_us"]["p99"] for r in ok], num)
            cpu = [r["published"] / r["broker_cpu_seconds_window"] for r in ok if r.get("broker_cpu_seconds_window")]
            per = span(cpu, num)[0] if cpu else ""
            med[(sc, b)] = m
            print(f"| {sc} | {b} | {len(ok)} | {rate} | {p50} | {p99} | {per} |")
    ratios = []
    for sc, brokers in runs.items():
        f = med.get((sc, "fanfare"))
        for peer in ("nats", "redis"):
            if f and med.get((sc, peer)):
                ratios.append(f"| {sc} | {peer} | {f / med[(sc, peer)]:.2f}x |")
    if ratios:
        print("\nFanfare's acknowledged publishes per second relative to each peer (medians):\n")
        print("| scenario | peer | Fanfare / peer |")
        print("|---|---|---|")
        print("\n".join(ratios))
    for r in rows:
        if r.get("scenario") == "disk sync latency":
            print(f"\nThe disk under {r['dir']} (bench/synclat.py, 4 KiB, 2,000 each): append + fdatasync "
                  f"p50 {r['append_fdatasync']['p50_us']:.0f} us (p99 {r['append_fdatasync']['p99_us']:.0f}); "
                  f"overwrite + fdatasync p50 {r['overwrite_fdatasync']['p50_us']:.0f} us "
                  f"(p99 {r['overwrite_fdatasync']['p99_us']:.0f}); O_DIRECT|O_DSYNC write p50 "
                  f"{r['odirect_odsync_write']['p50_us']:.0f} us (p99 {r['odirect_odsync_write']['p99_us']:.0f}).")
        if r.get("scenario") == "catch-up from disk":
            print(f"\nCatch-up from disk: {r['messages']:,} messages behind, read back by one `fanfare sub` in "
                  f"{r['seconds']:.1f} s: {r['messages'] / r['seconds']:,.0f} messages/s.")


def ab_durable(args):
    """Acked publishes per second, per broker CPU-second and ack p99 of two builds (A, B)."""
    rows = [json.loads(l) for l in open(args[0]) if l.strip()]
    rows = [r for r in rows if r.get("seconds")]
    med = lambda v: statistics.median(v) if v else 0.0
    print("| publishers | acked/s A | acked/s B | B/A | acked per broker CPU-s B/A | ack p99 us A | B |")
    print("|---|---|---|---|---|---|---|")
    for n in sorted({r["publishers"] for r in rows}, reverse=True):
        get = lambda b, f: [f(r) for r in rows if r["publishers"] == n and r["build"] == b]
        rate = lambda r: r["published"] / r["seconds"]
        cpu = lambda r: r["published"] / r["broker_cpu_seconds_window"] if r.get("broker_cpu_seconds_window") else 0.0
        p99 = lambda r: r["ack_latency_us"]["p99"]
        a, b = get("A", rate), get("B", rate)
        if not a or not b:
            continue
        span = lambda v: f"{med(v):,.0f} ({min(v):,.0f}-{max(v):,.0f})"
        ca, cb = med(get("A", cpu)), med(get("B", cpu))
        print(f"| {n} | {span(a)} | {span(b)} | {med(b) / med(a):.2f} | {cb / ca if ca else 0:.2f} | "
              f"{med(get('A', p99)):,.0f} | {med(get('B', p99)):,.0f} |")


if __name__ == "__main__":
    modes = {"compare": compare, "ab": ab, "durable": durable, "ab-durable": ab_durable, "memory": memory,
             "delta": delta}
    if len(sys.argv) < 3 or sys.argv[1] not in modes:
        sys.exit(__doc__)
    modes[sys.argv[1]](sys.argv[2:] + [""] * 4)
