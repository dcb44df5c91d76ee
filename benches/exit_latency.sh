#!/usr/bin/env bash
# Time from SIGTERM to process exit, minus what physics requires: the
# pre-drain delay, or the longest request still in flight, whichever ends
# later. Measured on the `axum` example (release build, `tower_graceful::serve`)
# with idle keep-alive connections open, held by a client that closes each
# when the server does, as pooled HTTP clients do (they must not hold the
# exit: no fixed linger), and one `/slow?ms=L` request started just before
# SIGTERM.
#
#   bash benches/exit_latency.sh                # L = 0, 500, 2000 ms; P = 1 s; 5 runs each
#   RUNS=10 SLOW_MS="0 3000" PRE_DRAIN=2s bash benches/exit_latency.sh
#
# Prints one Markdown row per L: the physical limit, the median and worst
# exit time after SIGTERM, and the median and worst overhead over the limit.
# Loopback only; every process started here is ended by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
SLOW_MS=${SLOW_MS:-"0 500 2000"}
PRE_DRAIN=${PRE_DRAIN:-1s}
IDLE=${IDLE:-8}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p tower-graceful-examples --bin axum
BIN="$CARGO_TARGET_DIR/release/axum"
(( BASH_VERSINFO[0] >= 5 )) || { echo "bash >= 5 needed (EPOCHREALTIME)" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl needed" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 needed" >&2; exit 2; }

pre_ms=$(( ${PRE_DRAIN%s} * 1000 ))
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

now_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }

one_run() { # slow_ms -> prints exit_us
  local slow=$1 log="$tmp/server.log" out="$tmp/server.out"
  : >"$log"; : >"$out"
  PORT=0 GRACEFUL_PRE_DRAIN=$PRE_DRAIN GRACEFUL_DEADLINE=10s RUST_LOG=info \
    "$BIN" >"$out" 2>"$log" &
  local pid=$!
  pids+=("$pid")
  local addr="" i
  for i in $(seq 1 200); do
    addr=$(sed -n 's/^listening on //p' "$out")
    [[ -n $addr ]] && break
    sleep 0.02
  done
  [[ -n $addr ]] || { echo "server did not start" >&2; return 1; }
  local port=${addr##*:}
  # Idle keep-alive connections: one request each, then left open until
  # the server closes them (then closed at once, as a pooled client does).
  python3 - "$port" "$IDLE" >"$tmp/idle.out" 2>&1 <<'PY' &
import socket, sys, select, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(4096)
    s.setblocking(False)
    socks.append(s)
print("idle", len(socks), flush=True)
deadline = time.monotonic() + 30
while socks and time.monotonic() < deadline:
    ready, _, _ = select.select(socks, [], [], 0.5)
    for s in ready:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            s.close()
            socks.remove(s)
PY
  local idle_pid=$!
  pids+=("$idle_pid")
  for i in $(seq 1 250); do
    grep -q "^idle" "$tmp/idle.out" 2>/dev/null && break
    sleep 0.02
  done
  local curl_pid=""
  if (( slow > 0 )); then
    curl -s -o /dev/null "http://$addr/slow?ms=$slow" &
    curl_pid=$!
    pids+=("$curl_pid")
    for i in $(seq 1 250); do
      grep -q "slow request started" "$log" && break
      sleep 0.02
    done
  fi
  local t0 t1
  t0=$(now_us)
  kill -TERM "$pid"
  wait "$pid" || true
  t1=$(now_us)
  kill -TERM "$idle_pid" 2>/dev/null || true
  wait "$idle_pid" 2>/dev/null || true
  [[ -n $curl_pid ]] && { wait "$curl_pid" || true; }
  echo $(( t1 - t0 ))
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
worst() { sort -n | tail -n 1; }

printf '| longest request in flight | limit (max of pre-drain %s and it) | exit after SIGTERM, median / worst | overhead, median / worst |\n' "$PRE_DRAIN"
printf '|---|---:|---:|---:|\n'
for slow in $SLOW_MS; do
  : >"$tmp/times"
  for r in $(seq 1 "$RUNS"); do one_run "$slow" >>"$tmp/times"; done
  limit_us=$(( (slow > pre_ms ? slow : pre_ms) * 1000 ))
  med=$(median <"$tmp/times"); wst=$(worst <"$tmp/times")
  printf '| %s ms | %d ms | %.1f / %.1f ms | %+.1f / %+.1f ms |\n' "$slow" $((limit_us / 1000)) \
    "$(echo "$med / 1000" | bc -l)" "$(echo "$wst / 1000" | bc -l)" \
    "$(echo "($med - $limit_us) / 1000" | bc -l)" "$(echo "($wst - $limit_us) / 1000" | bc -l)"
done
