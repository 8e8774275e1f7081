#!/usr/bin/env python3
"""The sync latency of the disk under a directory, as bench/durable.sh records it (one JSON
line): 4 KiB appended then fdatasync'ed, overwritten then fdatasync'ed, and written with
O_DIRECT|O_DSYNC inside the file (what Fanfare's log does per batch), 2,000 times each.

    python3 bench/synclat.py DIR
"""
import json
import mmap
import os
import sys
import time


def pct(xs):
    xs = sorted(xs)
    return {"p50_us": round(xs[len(xs) // 2] * 1e6, 1), "p99_us": round(xs[int(len(xs) * 0.99)] * 1e6, 1)}


def main(d, n=2000):
    p = os.path.join(d, "synclat.tmp")
    buf = mmap.mmap(-1, 4096)
    buf.write(b"x" * 4096)
    out = {"scenario": "disk sync latency", "dir": d}
    fd = os.open(p, os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    t = []
    for _ in range(n):
        s = time.perf_counter()
        os.write(fd, buf)
        os.fdatasync(fd)
        t.append(time.perf_counter() - s)
    out["append_fdatasync"] = pct(t)
    t = []
    for _ in range(n):
        s = time.perf_counter()
        os.pwrite(fd, buf, 0)
        os.fdatasync(fd)
        t.append(time.perf_counter() - s)
    out["overwrite_fdatasync"] = pct(t)
    os.close(fd)
    fd = os.open(p, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    t = []
    for i in range(n):
        s = time.perf_counter()
        os.pwritev(fd, [buf], (i % 256) * 4096)
        t.append(time.perf_counter() - s)
    out["odirect_odsync_write"] = pct(t)
    os.close(fd)
    os.unlink(p)
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
