#!/usr/bin/env bash
# Instructions per request for each per-request contender, counted by
# callgrind (repeatable: the same binary gives the same count on a busy or an
# idle machine, unlike nanoseconds). Counts only what runs inside the request
# loop (`--toggle-collect=*run_batch*`), and takes the difference between a
# run of N requests and a run of 0, so set-up and warm-up cancel out.
#
#   bash benches/icount.sh            # every contender, cloned per request
#   MODE=reused N=20000 bash benches/icount.sh "tg full stack" bare
#
# Needs valgrind (Debian package `valgrind`). Instructions are not time: a
# locked read-modify-write is one instruction that costs ~20 cycles, so read
# this beside the criterion tables, not instead of them.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
MODE=${MODE:-clone}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p tower-graceful-benches --bin icount
BIN="$CARGO_TARGET_DIR/release/icount"

if [ $# -gt 0 ]; then
  names=("$@")
else
  mapfile -t names < <("$BIN" --list)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

count() { # name requests -> Ir inside run_batch
  local out="$tmp/cg.out"
  valgrind --tool=callgrind --toggle-collect='*run_batch*' \
    --callgrind-out-file="$out" "$BIN" "$1" "$2" "$MODE" >/dev/null 2>"$tmp/vg.err" ||
    { cat "$tmp/vg.err" >&2; return 1; }
  awk '/^summary:/ { print $2 }' "$out"
}

printf '| contender (%s) | instructions / request | vs bare |\n|---|---:|---:|\n' "$MODE"
bare=""
for name in "${names[@]}"; do
  a=$(count "$name" 0)
  b=$(count "$name" "$N")
  per=$(awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN { printf "%.1f", (b - a) / n }')
  if [ "$name" = "bare" ]; then bare=$per; fi
  if [ -n "$bare" ]; then
    delta=$(awk -v p="$per" -v b="$bare" 'BEGIN { printf "%+.1f", p - b }')
  else
    delta="n/a"
  fi
  printf '| %s | %s | %s |\n' "$name" "$per" "$delta"
done
