#!/usr/bin/env python3
"""Convert the JumpStarter datasets 2 and 3 (NetManAIOps/JumpStarter, MIT) into the
corpus format `vigil-model eval --corpus` reads (scorer-model/README.md, "Real data").

Source layout (a checkout of https://github.com/NetManAIOps/JumpStarter, commit
b77022f1ee0b37decfb848fb1ced4707573c2529): dataset/Dataset{2,3}/{train,test,test_label}/
serviceN.csv, N = 0..29; test and train rows are 19 comma-separated metrics without a
header or a timestamp, test_label one 0/1 per row.

Output: OUT/jumpstarter-d{2,3}/serviceN.csv (`timestamp,m0..m18,label`) and
OUT/jumpstarter-d{2,3}/train/serviceN.csv (`timestamp,m0..m18`, unlabelled warm-up).
Metric fields are copied byte for byte. The datasets carry no timestamps: rows are 5
minutes apart (7 200 test rows = 25 days, 5 760 train rows = 20 days, as the JumpStarter
README states), so train row i is at i*300 s and test row i at (5760 + i)*300 s; the
evaluator uses only the spacing. `sha256sum -c SHA256SUMS` (in OUT, with this folder's
SHA256SUMS) checks the result, netman-kpi included (Donut's sample_data/{cpu4,
server_res_eth1out_curve_6,server_res_eth1out_curve_61}.csv copied unchanged from
https://github.com/NetManAIOps/donut at c8a44d91f102f36ba712e1e896408337501bce9b).
"""
import argparse
import os
import sys

ROW_SPACING_S = 300
SERVICES = 30


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def convert(source, out, dataset, name):
    base = os.path.join(source, "dataset", f"Dataset{dataset}")
    target = os.path.join(out, name)
    os.makedirs(os.path.join(target, "train"), exist_ok=True)
    windows = 0
    for s in range(SERVICES):
        f = f"service{s}.csv"
        train = lines(os.path.join(base, "train", f))
        test = lines(os.path.join(base, "test", f))
        labels = [x.strip() for x in lines(os.path.join(base, "test_label", f))]
        if len(test) != len(labels):
            sys.exit(f"{name}/{f}: {len(test)} test rows but {len(labels)} labels")
        if not set(labels) <= {"0", "1"}:
            sys.exit(f"{name}/{f}: labels other than 0/1: {sorted(set(labels))[:5]}")
        ncol = len(test[0].split(","))
        if any(len(row.split(",")) != ncol for row in test + train):
            sys.exit(f"{name}/{f}: ragged rows (expected {ncol} metrics)")
        header = ",".join(["timestamp"] + [f"m{j}" for j in range(ncol)])
        with open(os.path.join(target, "train", f), "w", encoding="utf-8") as o:
            o.write(header + "\n")
            for i, row in enumerate(train):
                o.write(f"{i * ROW_SPACING_S},{row}\n")
        with open(os.path.join(target, f), "w", encoding="utf-8") as o:
            o.write(header + ",label\n")
            for i, (row, y) in enumerate(zip(test, labels)):
                o.write(f"{(len(train) + i) * ROW_SPACING_S},{row},{y}\n")
        windows += sum(1 for i, y in enumerate(labels) if y == "1" and (i == 0 or labels[i - 1] != "1"))
    print(f"{name}: {SERVICES} series, {windows} incident windows -> {target}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="a JumpStarter checkout (holds dataset/)")
    ap.add_argument("--out", default="/work/data/corpora", help="corpora folder (default: %(default)s)")
    a = ap.parse_args()
    for dataset, name in ((2, "jumpstarter-d2"), (3, "jumpstarter-d3")):
        convert(a.source, a.out, dataset, name)


if __name__ == "__main__":
    main()
