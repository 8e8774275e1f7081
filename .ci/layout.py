#!/usr/bin/env python3
"""Checks the layout rules of docs/ARCHITECTURE.md:

- no import circle between the files of one crate (a file's imports are its `use crate::..`
  paths, `super::..` paths, and a module file's `use child::..` / `child::..` paths; doc
  comments count too, so a doc link cannot point upward either);
- no source file over LINES_MAX lines before its `#[cfg(test)] mod tests { .. }` (generated
  code excluded);
- every repository path the docs (README.md, docs/*.md) name exists (see
  `missing_doc_paths`).

Prints what it finds and exits 1 when a rule is broken.
"""
import glob
import os
import re
import subprocess
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
    # Only an inline test module: a `mod tests;` line declares a file of its own, and what
    # follows it is still the module's code.
    i = src.find("#[cfg(test)]\nmod tests {")
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


# A path-looking token: components of word characters, dots and dashes joined by slashes,
# not preceded by anything that makes it part of a URL, an absolute or home path, a shell
# variable or a longer word (`ns/topic` in `/v1/topics/ns/topic`, `~/.cargo/..`).
PATH_TOKEN = re.compile(r"(?<![\w./:~$@-])((?:[\w.-]+/)+[\w.-]*)")
# A source file's name, bare or after some folders: `store.rs`, `session/conn.rs`.
SOURCE_TOKEN = re.compile(r"(?<![\w./:~$@-])((?:[\w.-]+/)*[\w-]+\.(?:rs|ts|sh|py))\b(?![\w/])")


def repo_files():
    """The repository's files: what `git ls-files` lists (a checkout's build output and
    virtualenvs are not the repository), or, without git, what is on disk."""
    try:
        out = subprocess.run(
            ["git", "ls-files"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if out:
            return out
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for dirpath, dirs, files in os.walk("."):
        dirs[:] = [d for d in dirs if d not in (".git", "target", "node_modules")
                   and not d.startswith(".venv")]
        found += [os.path.relpath(os.path.join(dirpath, f), ".") for f in files]
    return found


def missing_doc_paths():
    """Every path README.md and docs/*.md name that is not there, as (file, line, path).

    1. A token is a repository path when it has a slash and its first component is a
       top-level entry of the repository (`core/src/shard/store.rs`, `bench/compare.sh`,
       `.ci/run`, `clients/typescript`, `docs/`), backticked or not, in prose or in code
       blocks; it must exist, resolved against the repository root. So URLs, absolute paths
       (`/var/lib/fanfare`, `/etc/..`), API paths (`/v1/topics/..`) and names like
       `ns/topic` are not checked. A token followed by a glob or template character (`*`,
       `{`, `<`, `$`: `proto/tests/*`, `bench/results/x-{a,b}.jsonl`) is a pattern, not a
       path, and is skipped; trailing dots and commas are punctuation.
    2. Any other source file name (`.rs`, `.ts`, `.sh`, `.py`), bare (`store.rs`) or with the
       folders inside its crate (`session/conn.rs`), must end the path of some file of the
       repository.
    """
    files = repo_files()
    roots = {f.split("/", 1)[0] for f in files}
    tails = set()
    for f in files:
        parts = f.split("/")
        tails.update("/".join(parts[i:]) for i in range(len(parts)))
    for doc in ["README.md"] + sorted(glob.glob("docs/*.md")):
        with open(doc, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                for m in PATH_TOKEN.finditer(line):
                    if line[m.end() : m.end() + 1] in ("*", "{", "<", "$"):
                        continue
                    path = m.group(1).rstrip(".,")
                    if path.split("/", 1)[0] in roots and not os.path.exists(path):
                        yield doc, n, path
                for m in SOURCE_TOKEN.finditer(line):
                    path = m.group(1)
                    if path.split("/", 1)[0] in roots and "/" in path:
                        continue  # rule 1's
                    if path not in tails:
                        yield doc, n, path


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
    for doc, n, path in missing_doc_paths():
        print(f"{doc}:{n}: {path}")
        broken = True
    print(
        "layout: "
        + (
            "broken"
            if broken
            else "ok (no import circles, no file over %d lines, every path the docs name exists)"
            % LINES_MAX
        )
    )
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
