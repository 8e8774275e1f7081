#!/usr/bin/env python3
"""Markdown tables from the raw results of the benchmark scripts (never edited by hand).

    python3 bench/report.py compare RESULTS.jsonl [IPERF_BYTES_PER_S] [BROKER_CPUS] [GEN_CPUS] [NCPU]
                                    [--only REGEX] [--part runs|ratios]
    python3 bench/report.py ab RESULTS.jsonl
    python3 bench/report.py durable RESULTS.jsonl
    python3 bench/report.py ab-durable RESULTS.jsonl
    python3 bench/report.py delta BEFORE.jsonl AFTER.jsonl
    python3 bench/report.py memory RESULTS.jsonl
    python3 bench/report.py cluster RESULTS.jsonl
    python3 bench/report.py background RESULTS.jsonl
    python3 bench/report.py ratios ab|ab-durable|delta|memory|background FILES...
    python3 bench/report.py page [--check] [PAGE.md ...]

`compare` reads bench/compare.sh's JSON lines (one per broker and scenario), `ab` reads
bench/ab.sh's (one per build, scenario and repetition), `durable` bench/durable.sh's,
`ab-durable` bench/ab-durable.sh's, `background` bench/background.sh's, `delta` two compare.sh files (before and after a
change), `memory` bench/memory-return.sh's, `cluster` bench/cluster.sh's. `ratios` prints a
comparison's ratios on one line (bench/results/README.md's history).

`page` makes the tables of docs/benchmarks.md and bench/results/README.md again from the raw
results their markers name (see PAGES below); `page --check` changes nothing and exits 1 when a
page differs from what its raw results give (CI runs it). Raw results worth keeping go to
bench/results/.
"""
import collections
import json
import os
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


def options(args, names):
    """Pulls `--name VALUE` options out of a mode's arguments: (the rest, {name: value})."""
    rest, opts, i = [], {}, 0
    while i < len(args):
        if args[i] in names and i + 1 < len(args):
            opts[args[i][2:]] = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    return rest, opts


def compare(args):
    """Median (min-max) of every scenario and broker over its runs, and the ratios.

    `--only REGEX` keeps the scenarios whose name matches; `--part runs` prints only the table
    of runs, `--part ratios` only Fanfare's ratios to its peers."""
    args, opts = options(args, ("--only", "--part"))
    path, iperf, broker_cpus, gen_cpus, ncpu = (args + [""] * 5)[:5]
    only = re.compile(opts.get("only", ""))
    part = opts.get("part", "all")
    rows = [json.loads(l) for l in open(path) if l.strip()]
    iperf = float(iperf) if iperf else None
    whole = any(r.get("mode") == "whole" for r in rows)
    rows = [r for r in rows if only.search(r["scenario"])]
    if whole:
        where = (f"Whole machine ({ncpu} CPUs): every broker at its own defaults on all of them, "
                 "the generator unpinned beside it")
    elif broker_cpus and gen_cpus:
        where = f"Broker on CPU {broker_cpus}, generator on CPU {gen_cpus} ({ncpu} CPUs)"
    else:
        # Tables made again from a results file: compare.sh passes the CPUs, a reader may not.
        where = "Broker and generator on their own CPUs (see the command above the table)"
    by = collections.OrderedDict()
    for r in rows:
        by.setdefault(r["scenario"], collections.OrderedDict()).setdefault(r["broker"], []).append(r)
    # The kernel's share is known only for runs that recorded the broker's system time.
    has_kernel = any(r.get("broker_system_seconds_window") is not None for r in rows)

    def span(values, fmt):
        m = statistics.median(values)
        if len(values) == 1:
            return fmt(m), m
        return f"{fmt(m)} ({fmt(min(values))}-{fmt(max(values))})", m

    lines = []
    medians = {}
    # The broker's kernel share of its CPU in the window (runs that recorded system time).
    kernel = {}
    for sc, brokers in by.items():
        for b, runs in brokers.items():
            ok = [r for r in runs if not r.get("error") and r.get("broker_cpu_s", 0) > 0]
            if not ok:
                err = next((r.get("error") for r in runs if r.get("error")), "no run")
                lines.append(f"| {sc} | {b} | 0 | failed: {str(err)[:120]} | | | | | | | | | |"
                             + (" |" if has_kernel else ""))
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
            lines.append(f"| {sc} | {b} | {len(ok)} | {rate} | {per} | {p50} | {p99} | "
                         f"{sum(r['gaps'] for r in ok)} | {sum(r['duplicates'] for r in ok)} | "
                         f"{sum(r['discontinuities'] for r in ok)} | {statistics.median(r['connect_seconds'] for r in ok):.2f} | "
                         f"{conn} | {gen*100:.0f}%{bound} |" + (f" {ks} |" if has_kernel else ""))
    if part in ("all", "runs"):
        print(f"{where}; "
              "`delivered/CPU-s` is deliveries per second of broker CPU time, both inside the measured "
              "window when the run recorded it; median of the runs, (min-max) when there were several.\n")
        print("| scenario | broker | runs | delivered/s | delivered/CPU-s | p50 us | p99 us | gaps | dups | discont. | connect s | RSS/conn KB | gen CPU |"
              + (" kernel |" if has_kernel else ""))
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if has_kernel else ""))
        print("\n".join(lines))
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
                cells = [sc, peer, f"{ratio:.2f}x", shown, reached] + ([ceiling, kns] if has_kernel else [])
            elif peer in brokers:
                cells = [sc, peer, f"{peer} failed", shown, "n/a"] + (["", ""] if has_kernel else [])
            else:
                continue
            summary.append("| " + " | ".join(cells) + " |")
    if summary and part in ("all", "ratios"):
        if part == "all":
            print()
        if has_kernel:
            print("Fanfare's delivered messages per broker CPU-second relative to each peer (medians); "
                  "`ceiling` is the ratio Fanfare would reach if its user-space time were zero "
                  "(its kernel time per delivery unchanged):\n")
            print("| scenario | peer | Fanfare / peer | target | reached | ceiling | kernel ns per delivery, Fanfare / peer |")
            print("|---|---|---|---|---|---|---|")
        else:
            print("Fanfare's delivered messages per broker CPU-second relative to each peer (medians):\n")
            print("| scenario | peer | Fanfare / peer | target | reached |")
            print("|---|---|---|---|---|")
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


def background(args):
    """Delivery latency of two builds, quiet and with background work (bench/background.sh)."""
    rows = [json.loads(l) for l in open(args[0]) if l.strip()]
    by = {}
    for r in rows:
        if "latency_us" not in r:
            continue
        by.setdefault(r["scenario"], {}).setdefault(r["build"], []).append(r)
    print("| scenario | build | runs | p50 µs | p99 µs | p99.9 µs | max µs | delivered/s | archive read |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for sc, b in by.items():
        med = {}
        for build in ("A", "B"):
            rs = b.get(build, [])
            if not rs:
                continue
            m = {q: statistics.median(r["latency_us"][q] for r in rs) for q in ("p50", "p99", "p999", "max")}
            rate = statistics.median(r.get("delivered_per_sec", 0) for r in rs)
            read = statistics.median(r.get("archive_read", 0) for r in rs)
            med[build] = m
            print(f"| {sc} | {build} | {len(rs)} | {m['p50']:,.0f} | {m['p99']:,.0f} | {m['p999']:,.0f} | {m['max']:,.0f} | {rate:,.0f} | {read:,.0f} |")
        if "A" in med and "B" in med:
            ratios.append((sc, {q: med["B"][q] / med["A"][q] for q in ("p50", "p99", "p999") if med["A"][q] > 0}))
    print()
    print("| scenario | B/A p50 | B/A p99 | B/A p99.9 |")
    print("|---|---|---|---|")
    for sc, r in ratios:
        print(f"| {sc} | {r.get('p50', 0):.2f} | {r.get('p99', 0):.2f} | {r.get('p999', 0):.2f} |")


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


def cluster(args):
    """bench/cluster.sh: a single node, a cluster and the cluster with TLS, run by run, and
    their ratios."""
    rows = [json.loads(l) for l in open(args[0]) if l.strip()]
    by = collections.OrderedDict()
    for r in rows:
        by.setdefault(r["scenario"], {})[r["setup"]] = r
    print("| scenario | setup | delivered/s | delivered per broker CPU-s | p50 us | p99 us | max us | gaps | dups |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for name, s in by.items():
        got = {}
        for setup in ("single", "cluster", "cluster-tls"):
            r = s.get(setup)
            if not r or "delivered" not in r:
                print(f"| {name} | {setup} | failed | | | | | | |")
                continue
            l = r["latency_us"]
            rate = r["delivered_per_sec"]
            per_cpu = r["delivered"] / r["broker_cpu_s"] if r["broker_cpu_s"] > 0 else float("nan")
            got[setup] = (rate, per_cpu, l["p50"])
            print(f"| {name} | {setup} | {rate:,.0f} | {per_cpu:,.0f} | {l['p50']:,.0f} | {l['p99']:,.0f} | "
                  f"{l['max']:,.0f} | {r['gaps']} | {r['duplicates']} |")
        for a, b in (("single", "cluster"), ("cluster", "cluster-tls")):
            if a in got and b in got:
                (ra, ca, la), (rb, cb, lb) = got[a], got[b]
                ratios.append(f"| {name} | {b} / {a} | {rb / ra:.2f}x | {cb / ca:.2f}x | {lb / max(la, 1):.2f}x |")
    print()
    print("| scenario | ratio | delivered/s | per broker CPU-s | p50 latency |")
    print("|---|---|---|---|---|")
    print("\n".join(ratios))


# One-line summaries of a comparison, for bench/results/README.md (`ratios MODE FILES`).

def short(scenario):
    """compare.sh's scenario names, shortened as ab.sh names them."""
    m = re.match(r"fan-out: 1 publisher, 1 topic, (\d+) subscribers", scenario)
    if m:
        return f"1->{int(m.group(1)):,}"
    for prefix, name in (("many topics", "many topics"), ("fixed rate", "fixed rate"),
                         ("large payloads", "64 KiB"), ("connection storm", "storm")):
        if scenario.startswith(prefix):
            return name
    return scenario.split(":")[0]


def b_over_a(path, value):
    """Per scenario of a two-build file (`build` A or B): B/A of the medians of `value(row)`
    (rows it gives None for are skipped), `apart` where the two builds' ranges do not overlap."""
    by = collections.OrderedDict()
    for l in open(path):
        r = json.loads(l)
        v = value(r)
        if v is not None:
            by.setdefault(r["scenario"], {}).setdefault(r["build"], []).append(v)
    out = []
    for sc, b in by.items():
        a, n = b.get("A", []), b.get("B", [])
        if a and n:
            apart = " apart" if min(n) > max(a) or max(n) < min(a) else ""
            out.append(f"{sc.replace('->1000', '->1,000')} {statistics.median(n) / statistics.median(a):.2f}{apart}")
    return ", ".join(out)


def ab_ratios(args):
    """B/A of the medians of deliveries per broker CPU-second, per scenario."""
    ok = lambda r: "delivered" in r and r["broker_cpu_s"] > 0
    print("B/A " + b_over_a(args[0], lambda r: r["delivered"] / r["broker_cpu_s"] if ok(r) else None))


def ab_durable_ratios(args):
    """Acked publishes per second B/A (and per broker CPU-second) per publisher count."""
    rows = [json.loads(l) for l in open(args[0]) if l.strip()]
    rows = [r for r in rows if r.get("seconds")]
    out = []
    for n in sorted({r["publishers"] for r in rows}, reverse=True):
        def med(build, f):
            v = [f(r) for r in rows if r["publishers"] == n and r["build"] == build]
            return statistics.median(v) if v else 0.0
        rate = lambda r: r["published"] / r["seconds"]
        cpu = lambda r: r["published"] / r["broker_cpu_seconds_window"] if r.get("broker_cpu_seconds_window") else 0.0
        if med("A", rate) and med("B", rate):
            per = f", per CPU-s {med('B', cpu) / med('A', cpu):.2f}" if med("A", cpu) else ""
            out.append(f"{n} publishers {med('B', rate) / med('A', rate):.2f}{per}")
    print("acked/s B/A " + "; ".join(out))


def delta_ratios(args):
    """Fanfare's after/before per scenario, and each against NATS: the NATS runs of its own
    file, or of the other file when its own has none."""
    def medians(path):
        by = collections.OrderedDict()
        for l in open(path):
            r = json.loads(l)
            if not r.get("error") and r.get("broker_cpu_s", 0) > 0:
                by.setdefault((r["scenario"], r["broker"]), []).append(r["delivered"] / r["broker_cpu_s"])
        return {k: statistics.median(v) for k, v in by.items()}
    before, after = medians(args[0]), medians(args[1])
    out = []
    for (sc, b), f1 in after.items():
        f0 = before.get((sc, "fanfare"))
        if b != "fanfare" or not f0:
            continue
        n0 = before.get((sc, "nats")) or after.get((sc, "nats"))
        n1 = after.get((sc, "nats")) or before.get((sc, "nats"))
        vs = f" ({f0 / n0:.2f}x -> {f1 / n1:.2f}x NATS)" if n0 else ""
        out.append(f"{short(sc)} {f1 / f0:.2f}{vs}")
    print("after/before " + ", ".join(out))


def memory_ratios(args):
    """RSS after a storm above idle, median (min-max), and the heap's part; one file or two."""
    def one(path):
        over, anon = [], []
        for l in open(path):
            r = json.loads(l)
            for a in r["after"]:
                over.append((a["VmRSS"] / r["idle"]["VmRSS"] - 1) * 100)
                anon.append(a["RssAnon"] - r["idle"]["RssAnon"])
        return (f"{statistics.median(over):.1f}% ({min(over):.1f}-{max(over):.1f}%)",
                f"+{statistics.median(anon):,.0f} KiB")
    got = [one(p) for p in args if p]
    print("RSS above idle after a storm " + " -> ".join(g[0] for g in got)
          + ", heap " + " -> ".join(g[1] for g in got))


def background_ratios(args):
    """B/A of the median p99 delivery latency, quiet and with background work."""
    p99 = lambda r: r["latency_us"]["p99"] if "latency_us" in r else None
    print("p99 latency B/A " + b_over_a(args[0], p99))


RATIOS = {"ab": ab_ratios, "ab-durable": ab_durable_ratios, "delta": delta_ratios, "memory": memory_ratios,
          "background": background_ratios}


def ratios(args):
    if not args or args[0] not in RATIOS:
        sys.exit("ratios: one of " + ", ".join(RATIOS))
    RATIOS[args[0]](args[1:])


# Pages whose tables this script makes: docs/benchmarks.md and bench/results/README.md.
#
#   <!-- table: MODE ARGS -->             a block: MODE's output for ARGS (paths from the
#   ...                                   repository's root), made again by `page`
#   <!-- end table -->
#   text <!-- ratios: MODE ARGS -->...<!-- end --> text      the same inside one line
#
# A table outside a block must say that it holds no measured figure: the line before it is
# `<!-- not measured -->`.
PAGES = ["docs/benchmarks.md", "bench/results/README.md"]
BLOCK = re.compile(r"(<!-- table: (.*?) -->\n)(.*?)(<!-- end table -->)", re.S)
INLINE = re.compile(r"(<!-- ratios: (.*?) -->)(.*?)(<!-- end -->)")


def render(spec, inline):
    """What one marker's command prints."""
    import contextlib
    import io
    import shlex
    argv = shlex.split(spec)
    table = RATIOS if inline else MODES
    if not argv or argv[0] not in table:
        raise ValueError(f"unknown mode in marker `{spec}`")
    for a in argv[1:]:
        if a.startswith("bench/results/") and not os.path.exists(a):
            raise ValueError(f"marker `{spec}`: no file {a}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        table[argv[0]](argv[1:] + ([] if inline else [""] * 4))
    text = out.getvalue().strip("\n")
    return text if inline else "\n" + text + "\n\n"


def make_page(text):
    """The page with every marker's content made again, and the tables found outside them."""
    for marker, whole in (("<!-- table:", BLOCK), ("<!-- ratios:", INLINE)):
        if text.count(marker) != len(whole.findall(text)):
            raise ValueError(f"a `{marker} ... -->` marker without its end marker")
    text = BLOCK.sub(lambda m: m.group(1) + render(m.group(2), False) + m.group(4), text)
    text = INLINE.sub(lambda m: m.group(1) + render(m.group(2), True) + m.group(4), text)
    loose, inside, prev = [], False, ""
    for n, line in enumerate(text.split("\n"), 1):
        if line.startswith("<!-- table:"):
            inside = True
        elif line.startswith("<!-- end table -->"):
            inside = False
        elif line.startswith("|") and not inside and not prev.startswith("|") and prev != "<!-- not measured -->":
            loose.append(n)
        prev = line
    return text, loose


def page(args):
    """`page [--check] [FILES]`: makes the tables of the pages again from the raw results their
    markers name; with --check, changes nothing and fails when a page differs from what the
    raw results give (or holds a table outside a marker)."""
    import difflib
    check = "--check" in args
    files = [a for a in args if a and a != "--check"] or PAGES
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    bad = False
    for path in files:
        try:
            old = open(path, encoding="utf-8").read()
            new, loose = make_page(old)
        except (ValueError, OSError, KeyError) as e:
            print(f"{path}: {e}")
            bad = True
            continue
        for n in loose:
            print(f"{path}:{n}: a table outside a generated block (mark it `<!-- not measured -->` if it holds no figures)")
            bad = True
        if new == old:
            continue
        if check:
            print(f"{path}: differs from what its raw results give (`python3 bench/report.py page` makes it again):")
            diff = difflib.unified_diff(old.split("\n"), new.split("\n"), path, "generated", n=0, lineterm="")
            print("\n".join(list(diff)[:40]))
            bad = True
        else:
            open(path, "w", encoding="utf-8").write(new)
            print(f"{path}: tables made again")
    if check and not bad:
        print(f"benchmark pages: every table matches its raw results ({', '.join(files)})")
    sys.exit(1 if bad else 0)


MODES = {"compare": compare, "ab": ab, "durable": durable, "ab-durable": ab_durable, "memory": memory,
         "delta": delta, "cluster": cluster, "background": background}


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "page":
        page(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "ratios":
        ratios(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] in MODES:
        MODES[sys.argv[1]](sys.argv[2:] + [""] * 4)
    else:
        sys.exit(__doc__)
