#!/usr/bin/env python3
"""Render the goal figures of a `make bench` run as the markdown block bench/README.md keeps.

Usage: scripts/bench-figures.py [target/bench/results.json] [--when "2026-12-02 08:00 UTC"]
       [--machine "..."] [--note "..."]

Reads the results written by `vigil-bench` (an array of {name, value, unit, min, max, n, note})
and prints one "Latest figures" block: the goals of issues 11, 14, 15 and 16 with the measured
value, its spread over rounds and the verdict. Only figures present in the file are printed;
a missing one says "not measured in this run". Nothing is computed here but ratios of
figures the bench measured in the same run.
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        return {r["name"]: r for r in json.load(f)}


def fmt(v, digits=2):
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def spread(r, digits=2):
    if r.get("min") is None or r.get("max") is None:
        return ""
    return f" [{fmt(r['min'], digits)}..{fmt(r['max'], digits)}]"


def row(results, name, goal, cmp, limit, digits=2, unit=""):
    r = results.get(name)
    if r is None or r.get("value") is None:
        return f"| `{name}` | {goal} | not measured in this run | — |"
    v = r["value"]
    ok = v <= limit if cmp == "<=" else v >= limit
    return f"| `{name}` | {goal} | {fmt(v, digits)}{unit}{spread(r, digits)} | {'met' if ok else '**not met**'} |"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?", default="target/bench/results.json")
    ap.add_argument("--when", default="(date)")
    ap.add_argument("--machine", default="2 cores")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    res = load(a.results)
    out = [f"### Latest figures: {a.when}, {a.machine}", ""]
    if a.note:
        out += [a.note, ""]
    out += ["| figure | goal | median [min..max] over rounds | verdict |", "|---|---|---|---|"]
    for c in ("c1.open", "c1.sat", "c2.open", "c2.sat"):
        for v in ("steer", "shadow"):
            out.append(row(res, f"dataplane.{c}.{v}/noop.cpu_per_req", "≤ 1.10× no-op", "<=", 1.10))
    for c in ("c1.sat", "c2.sat"):
        r = res.get(f"dataplane.{c}.steer_edges/steer.cpu_per_req")
        if r is not None:
            out.append(f"| `dataplane.{c}.steer_edges/steer.cpu_per_req` | reported (edges on ÷ off) | "
                       f"{fmt(r['value'])}{spread(r)} | reported |")
    out.append(row(res, "host.10000.lease_tick", "≤ 10 ms", "<=", 10.0, 1, " ms"))
    out.append(row(res, "host.10000.idle_lease_tick", "≤ 10 ms", "<=", 10.0, 1, " ms"))
    out.append(row(res, "ticks.10000.envoy.lease_tick_cpu_per_period", "≤ 10 ms", "<=", 10.0, 1, " ms"))
    out.append(row(res, "ticks.10000.steer-noop.max_ms", "≤ 1 ms", "<=", 1.0, 2, " ms"))
    out.append(row(res, "scale.10000.envoy.idle_tick_cpu_per_period", "≤ 5 ms", "<=", 5.0, 1, " ms"))
    out.append(row(res, "scale.10000.envoy.rss_per_series_per_worker", "≤ 1 024 B", "<=", 1024.0, 0, " B"))
    out.append(row(res, "scale.10000.envoy.wasm_rss_per_series_per_worker", "≤ 1 024 B", "<=", 1024.0, 0, " B"))
    for s in ("1000", "10000"):
        out.append(row(res, f"scorer.{s}.observe_and_score", "≤ 1 000 ns", "<=", 1000.0, 0, " ns"))
        out.append(row(res, f"scorer.{s}.state_bytes_per_series", "≤ 2 500 B", "<=", 2500.0, 0, " B"))
    out.append(row(res, "pii.16384.detect/noop.cpu_per_req", "≤ 1.5× no-op", "<=", 1.5))
    out.append(row(res, "control.ingest.series_updates_per_s", "≥ 1 000 000 /s", ">=", 1e6, 0))
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
