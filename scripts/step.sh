#!/usr/bin/env bash
# step.sh NAME CMD...: runs CMD, printing its name, wall time and CPU time (user + system of
# CMD and everything it waited for; read by humans and CI logs).
set -uo pipefail
name=$1; shift
start=$(date +%s.%N)
printf '\n==> %s\n' "$name"
"$@"
rc=$?
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
# `times`' second line: the children's user and system time, e.g. "1m2.500s 0m3.250s".
# (`times` must run in this shell, not in a pipeline's or $(...)'s subshell.)
tfile=$(mktemp)
times >"$tfile"
cpu=$(sed -n 2p "$tfile" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); t += p[1] * 60 + p[2] } printf "%.1f", t }')
rm -f "$tfile"
if [[ $rc -eq 0 ]]; then
    printf '<== %s: ok in %ss (cpu %ss)\n' "$name" "$secs" "$cpu"
    mkdir -p target && printf '%s\t%s\t(cpu %s s)\n' "$name" "$secs" "$cpu" >>target/make-test-times.tsv
else
    printf '<== %s: FAILED (exit %d) after %ss (cpu %ss)\n' "$name" "$rc" "$secs" "$cpu" >&2
fi
exit $rc
