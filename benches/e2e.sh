#!/usr/bin/env bash
# End-to-end: a real axum server on loopback under wrk, modes interleaved
# round by round (bare noop full, bare noop full, ...). Reports requests/s and
# the server's CPU time per request (utime+stime from /proc/<pid>/stat around
# each round), per round and as medians over the rounds.
#
#   benches/e2e.sh                      # 5 rounds x 5 s per mode
#   ROUNDS=3 DUR=3 MODES="bare full" benches/e2e.sh
#
# Knobs: ROUNDS (5), DUR seconds per round (5), CONNS (32), WRK_THREADS (1),
# SERVER_WORKERS (1), MODES ("bare noop full"; also "full-signal"),
# PIN (1: server on CPU 0, wrk on CPU 1 with taskset, when there are >= 2 CPUs),
# CARGO_TARGET_DIR (/work/target-c). Needs wrk (Debian: apt-get install -y wrk).
# Every process it starts is killed by PID on exit. Loopback only.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DUR=${DUR:-5}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-1}
MODES=${MODES:-"bare noop full"}
PIN=${PIN:-1}
BASE_PORT=${BASE_PORT:-39180}
export SERVER_WORKERS=${SERVER_WORKERS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-c}

if ! command -v wrk >/dev/null; then
    echo "wrk is missing: apt-get install -y wrk" >&2
    exit 1
fi

cd "$(dirname "$0")/.."
cargo build --release -q -p tower-graceful-benches --bin server
BIN="$CARGO_TARGET_DIR/release/server"

SERVER_PIN=()
WRK_PIN=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c 0)
    WRK_PIN=(taskset -c 1)
fi

PIDS=()
WORK=$(mktemp -d)
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

declare -A PORT PID
i=0
for m in $MODES; do
    PORT[$m]=$((BASE_PORT + i))
    i=$((i + 1))
    "${SERVER_PIN[@]}" "$BIN" "$m" "${PORT[$m]}" >"$WORK/$m.log" 2>&1 &
    PID[$m]=$!
    PIDS+=("${PID[$m]}")
done

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    exit 1
}
for m in $MODES; do wait_port "${PORT[$m]}"; done

ticks() { # utime + stime of a pid, in clock ticks (fields 14 and 15; comm has no spaces)
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
HZ=$(getconf CLK_TCK)

# Warm-up: 1 s per server.
for m in $MODES; do
    "${WRK_PIN[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d1s "http://127.0.0.1:${PORT[$m]}/" >/dev/null
done

echo "# e2e: $(date -u +%FT%TZ), $(nproc) CPUs, rounds=$ROUNDS dur=${DUR}s conns=$CONNS wrk_threads=$WRK_THREADS server_workers=$SERVER_WORKERS pin=${SERVER_PIN[*]:-none}/${WRK_PIN[*]:-none}"
echo "round mode requests req_per_s cpu_us_per_req p50_latency p99_latency"
: >"$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
    for m in $MODES; do
        t0=$(ticks "${PID[$m]}")
        out=$("${WRK_PIN[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:${PORT[$m]}/")
        t1=$(ticks "${PID[$m]}")
        reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
        rps=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
        p50=$(echo "$out" | awk '$1 == "50%" { print $2 }')
        p99=$(echo "$out" | awk '$1 == "99%" { print $2 }')
        if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
            echo "warning: wrk reported errors for $m:" >&2
            echo "$out" | grep "Non-2xx\|Socket errors" >&2
        fi
        cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
        echo "$r $m $reqs $rps $cpu $p50 $p99" | tee -a "$WORK/results"
    done
done

echo
echo "| mode | median req/s | × bare | median server CPU µs/req | × bare |"
echo "|---|---:|---:|---:|---:|"
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
base_rps=""
base_cpu=""
for m in $MODES; do
    rps=$(awk -v m="$m" '$2 == m { print $4 }' "$WORK/results" | median)
    cpu=$(awk -v m="$m" '$2 == m { print $5 }' "$WORK/results" | median)
    [ -z "$base_rps" ] && base_rps=$rps && base_cpu=$cpu
    awk -v m="$m" -v r="$rps" -v c="$cpu" -v br="$base_rps" -v bc="$base_cpu" \
        'BEGIN { printf "| %s | %.0f | %.3f | %.2f | %.3f |\n", m, r, r / br, c, c / bc }'
done
