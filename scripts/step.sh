#!/usr/bin/env bash
# step.sh NAME CMD...: runs CMD, printing its name and wall time (read by humans and CI logs).
set -uo pipefail
name=$1; shift
start=$(date +%s.%N)
printf '\n==> %s\n' "$name"
"$@"
rc=$?
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
if [[ $rc -eq 0 ]]; then
    printf '<== %s: ok in %ss\n' "$name" "$secs"
    mkdir -p target && printf '%s\t%s\n' "$name" "$secs" >>target/make-test-times.tsv
else
    printf '<== %s: FAILED (exit %d) after %ss\n' "$name" "$rc" "$secs" >&2
fi
exit $rc
