#!/usr/bin/env python3
"""Checks the layout rules of docs/ARCHITECTURE.md:

- no import circle between the files of one crate (a file's imports are its `use crate::..`
  paths, `super::..` paths, and a module file's `use child::..` / `child::..` paths; doc
  comments count too, so a doc link cannot point upward either);
- no source file over LINES_MAX lines before its `#[cfg(test)] mod tests` (generated code
  excluded).

Prints what it finds and exits 1 when a rule is broken.
"""
import os
import re
import sys

LINES_MAX = 800
CRATES = ["proto/src", "core/src", "net/src", "bench/src", "src"]


def modules(root):
    mods = {}
    for dirpath, _, files in os.walk(root):
        if "generated" in dirpath:
            continue
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            mods[tuple(rel)] = path
    return mods


def without_tests(src):
    i = src.find("#[cfg(test)]\nmod tests")
    return src if i < 0 else src[:i]


def imports(src, me, mods):
    out = set()
    for m in re.finditer(r"crate::((?:\w+::)*)(\{[^;]*?\}|\w+)", src):
        base = [x for x in m.group(1).split("::") if x]
        tail = m.group(2)
        paths = []
        if tail.startswith("{"):
            for part in tail[1:-1].split(","):
                part = part.strip().split(" as ")[0]
                if part:
                    paths.append(base + [x for x in part.strip("{} ").split("::") if x])
        else:
            paths.append(base + [tail])
        for p in paths:
            for k in range(len(p), 0, -1):
                if tuple(p[:k]) in mods:
                    out.add(tuple(p[:k]))
                    break
    for m in re.finditer(r"\bsuper::(\w+)", src):
        parent = me[:-1]
        cand = parent + (m.group(1),)
        out.add(cand if cand in mods else parent)
    for cand in mods:
        if len(cand) == len(me) + 1 and cand[: len(me)] == me:
            if re.search(r"(?<![\w:])" + cand[-1] + r"::", src):
                out.add(cand)
    out.discard(me)
    return {m for m in out if m in mods}


def cycles(graph):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    broken = False
    for root in CRATES:
        mods = modules(root)
        graph = {}
        for m, path in mods.items():
            src = without_tests(open(path, encoding="utf-8").read())
            graph[m] = imports(src, m, mods)
            n = src.count("\n")
            if n > LINES_MAX:
                print(f"{path}: {n} lines before its tests (at most {LINES_MAX})")
                broken = True
        for comp in cycles(graph):
            names = " <-> ".join(mods[m] for m in sorted(comp))
            print(f"{root}: import circle between {names}")
            broken = True
    print("layout: " + ("broken" if broken else "ok (no import circles, no file over %d lines)" % LINES_MAX))
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
