#!/usr/bin/env bash
# Instructions per request, counted by valgrind (callgrind), which a busy machine does not disturb:
# the whole in-process run (bench/cpu.py) at two request counts, and the difference divided.
#   bench/instructions.sh [neucron|client_credentials|refresh|introspect|jwks] [small] [large]
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-neucron}; small=${2:-300}; large=${3:-1300}
count() {
  local out; out=$(mktemp)
  PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$out" .venv/bin/python bench/cpu.py "$kind" --requests "$1" >/dev/null 2>&1
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
  rm -f "$out"
}
a=$(count "$small"); b=$(count "$large")
echo "$kind: $(( (b - a) / (large - small) )) instructions per request"
