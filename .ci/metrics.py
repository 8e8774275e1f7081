#!/usr/bin/env python3
"""Checks that the shipped dashboard and alert rules name only metrics a node exports.

    python3 .ci/metrics.py METRICS_FILE packaging/monitoring/fanfare-dashboard.json \
        packaging/monitoring/fanfare-alerts.yml

METRICS_FILE is a live node's /metrics text. Every `fanfare_*` and `process_*` name in the
dashboard's queries (`expr`, and the variables' `query`) and in the rules' `expr` lines must
be a sample name of that text (a histogram's `_bucket`, `_sum`, `_count` included). Prints
each unknown name with where it is used and exits 1 when there is one.
"""
import json
import re
import sys

NAME = re.compile(r"\b(?:fanfare|process)_[a-zA-Z0-9_]*")


def exported(metrics_text):
    names = set()
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_queries(node, where="dashboard"):
    """Yields (where, query) for every `expr` and variable `query` string in the JSON."""
    if isinstance(node, dict):
        title = node.get("title") or node.get("name") or where
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield title, value
            else:
                yield from dashboard_queries(value, title)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item, where)


def rule_queries(text):
    alert = "rules"
    for line in text.splitlines():
        m = re.match(r"\s*-?\s*(alert|record):\s*(.+)", line)
        if m:
            alert = m.group(2).strip()
        m = re.match(r"\s*expr:\s*(.+)", line)
        if m:
            yield alert, m.group(1)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    metrics_path, dashboard_path, rules_path = sys.argv[1:]
    with open(metrics_path) as f:
        names = exported(f.read())
    with open(dashboard_path) as f:
        queries = list(dashboard_queries(json.load(f)))
    with open(rules_path) as f:
        queries += list(rule_queries(f.read()))
    unknown = []
    used = 0
    for where, query in queries:
        for name in NAME.findall(query):
            used += 1
            if name not in names:
                unknown.append(f"{name} (in {where!r}: {query})")
    if used == 0:
        unknown.append("no fanfare_* or process_* metric named at all: the parsing is broken")
    for u in unknown:
        print("unknown metric:", u)
    print(f"{len(queries)} queries, {used} metric names, {len(unknown)} unknown")
    sys.exit(1 if unknown else 0)


if __name__ == "__main__":
    main()
