#!/usr/bin/env bash
# Replay Vigil's self path on labelled real corpora beside a rolling z-score
# and an EWMA chart (`vigil-model eval --corpus`). The corpora are NOT in git:
# place them under $CORPORA (default /work/data/corpora), one folder per
# corpus of `timestamp,value,label` (or `timestamp,<metrics>,label`) CSV
# files, optionally with a train/ folder of unlabelled warm-up history.
# See scorer-model/README.md ("Real data").
set -euo pipefail
cd "$(dirname "$0")/.."
CORPORA="${CORPORA:-/work/data/corpora}"
MODEL="${MODEL:-scorer-model/models/ops-5min.json}"
cargo build --release -q -p vigil-scorer --bin vigil-model
found=0
for dir in "$CORPORA"/*/; do
  ls "$dir"*.csv >/dev/null 2>&1 || continue
  found=1
  echo "=== $dir"
  ./target/release/vigil-model eval --corpus "$dir" --model "$MODEL" "$@"
  echo
done
if [ "$found" = 0 ]; then
  echo "eval-corpus: no corpus folders with *.csv under $CORPORA" >&2
  exit 2
fi
