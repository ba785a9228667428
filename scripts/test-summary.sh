#!/usr/bin/env bash
# test-summary.sh LOG...: adds up cargo's "test result:" lines of the given logs and
# prints one closing line "tests: N passed, N failed, N skipped".
set -euo pipefail
awk '
  /^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/)  passed  += $(i-1)
      if ($(i) ~ /^failed;?$/)  failed  += $(i-1)
      if ($(i) ~ /^ignored;?$/) ignored += $(i-1)
    }
  }
  END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }
' "$@"
