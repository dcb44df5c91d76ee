#!/usr/bin/env bash
# A served app (issue 18): the same axum app (`GET /` -> `hello world`) served
# by tower_graceful::serve, axum::serve and hyper-util's auto::Builder, under
# HTTP/1.1 keep-alive, HTTP/1.1 one connection per request and h2c, on
# loopback. All servers run at once; every (protocol, server) pair gets one
# run per round, servers alternated within each round (the order rotated by
# one each round, so no server is always first after another's load), so
# machine noise falls on all of them alike. Reports requests/s and the
# server's CPU time per request (utime+stime of the whole process, from
# /proc/<pid>/stat, around each run), median and min-max over the rounds,
# each median against the best server of its protocol, and each run as a
# ratio to the reference server's run of the same round (paired: adjacent in
# time, so slow drifts of a shared machine cancel), median and min-max.
#
#   bash benches/served.sh                          # 5 servers x 3 protocols x 5 rounds x 3 s: ~4 min
#   ROUNDS=3 DUR=2 SERVERS="serve axum hyper-util" PROTOS="h1 h2c" bash benches/served.sh
#   SMOKE=1 bash benches/served.sh                  # 1 round x 1 s: the script works
#   ICOUNT=1 bash benches/served.sh                 # user-space instructions per request
#
# ICOUNT=1: each server in turn under valgrind's callgrind (one at a time, no
# pinning); per protocol the counters are zeroed, the load runs DUR seconds,
# and the instructions since the zero (user space only: the kernel's share of
# the CPU is not in them) are divided by the requests completed. Repeatable to
# a fraction of a per cent on a busy machine, where requests/s are not.
#
# Knobs: ROUNDS (5), DUR seconds per run (3), CONNS (32: HTTP/1.1 connections),
# H2_CONNS (4) x H2_STREAMS (8) concurrent streams for h2c, SERVERS ("serve
# serve-bare axum axum-graceful hyper-util"; also serve-bare-nt, serve-around,
# hyper-util-timer: see benches/src/bin/served.rs), PROTOS ("h1
# h1-close h2c"), SERVER_WORKERS (1 tokio worker), PIN (1: servers on CPU 0,
# the load generator on CPU 1, with taskset, when there are >= 2 CPUs), REF
# (hyper-util: the server every run is paired with, in its round),
# CARGO_TARGET_DIR (target), SERVED_BIN (a served binary to use as it is). Load generators: wrk (HTTP/1.1; Debian: apt-get
# install -y wrk) and h2load (h2c, prior knowledge; Debian: apt-get install -y
# nghttp2-client). Loopback only. Every server it starts is ended by its PID;
# every run is bounded by `timeout`.
set -euo pipefail

if [ "${SMOKE:-0}" = 1 ]; then
    ROUNDS=${ROUNDS:-1}
    DUR=${DUR:-1}
    WARMUP=${WARMUP:-0}
fi
ROUNDS=${ROUNDS:-5}
DUR=${DUR:-3}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-32}
H2_CONNS=${H2_CONNS:-4}
H2_STREAMS=${H2_STREAMS:-8}
SERVERS=${SERVERS:-"serve serve-bare axum axum-graceful hyper-util"}
PROTOS=${PROTOS:-"h1 h1-close h2c"}
PIN=${PIN:-1}
REF=${REF:-hyper-util}
export SERVER_WORKERS=${SERVER_WORKERS:-1}

for tool in wrk h2load; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool is missing (Debian: apt-get install -y wrk nghttp2-client)" >&2
        exit 1
    fi
done
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 50 ] || { echo "ROUNDS must be 1..50" >&2; exit 1; }
[ "$DUR" -ge 1 ] && [ "$DUR" -le 60 ] || { echo "DUR must be 1..60" >&2; exit 1; }

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ -n "${SERVED_BIN:-}" ]; then
    BIN=$SERVED_BIN # a binary built elsewhere (another commit), not rebuilt
else
    cargo build --release -q -p tower-graceful-benches --bin served
    BIN="$CARGO_TARGET_DIR/release/served"
fi

SERVER_PIN=()
LOAD_PIN=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c 0)
    LOAD_PIN=(taskset -c 1)
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
for s in $SERVERS; do
    "${SERVER_PIN[@]}" "$BIN" --server "$s" --addr 127.0.0.1:0 >"$WORK/$s.log" 2>&1 &
    PID[$s]=$!
    PIDS+=("${PID[$s]}")
done
for s in $SERVERS; do
    for _ in $(seq 1 100); do
        PORT[$s]=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/$s.log")
        [ -n "${PORT[$s]}" ] && break
        sleep 0.1
    done
    if [ -z "${PORT[$s]}" ]; then
        echo "server $s did not start:" >&2
        cat "$WORK/$s.log" >&2
        exit 1
    fi
done

HZ=$(getconf CLK_TCK)
ticks() { # utime + stime of the whole process, in clock ticks (fields 14, 15; comm has no spaces)
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# One load run: prints "requests errors req_per_s".
load() { # proto port seconds
    local proto=$1 port=$2 secs=$3 out
    case $proto in
        h1 | h1-close)
            local hdr=()
            [ "$proto" = h1-close ] && hdr=(-H "Connection: close")
            out=$(timeout $((secs + 15)) "${LOAD_PIN[@]}" wrk -t1 -c"$CONNS" -d"${secs}s" "${hdr[@]}" \
                "http://127.0.0.1:$port/")
            echo "$out" | awk '
                /requests in/ { n = $1 }
                /^Requests\/sec:/ { rps = $2 }
                /Socket errors/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
                /Non-2xx/ { e += $NF }
                END { printf "%d %d %s\n", n, e, rps }'
            ;;
        h2c)
            out=$(timeout $((secs + 15)) "${LOAD_PIN[@]}" h2load -c"$H2_CONNS" -m"$H2_STREAMS" -D "$secs" \
                "http://127.0.0.1:$port/")
            echo "$out" | awk '
                /^finished in/ { rps = $4 }
                /^requests:/ { n = $8; e = $10 + $12 + $14 }
                /^status codes:/ { e += $5 + $7 + $9 }
                END { printf "%d %d %s\n", n, e, rps }'
            ;;
        *)
            echo "unknown protocol $proto" >&2
            exit 1
            ;;
    esac
}

if [ "$WARMUP" -ge 1 ]; then
    for p in $PROTOS; do
        for s in $SERVERS; do load "$p" "${PORT[$s]}" 1 >/dev/null; done
    done
fi

if [ "${ICOUNT:-0}" = 1 ]; then
    command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
        { echo "valgrind is missing (Debian: apt-get install -y valgrind)" >&2; exit 1; }
    echo "# served, instructions: $(date -u +%FT%TZ), dur=${DUR}s h1 conns=$CONNS h2c ${H2_CONNS}x${H2_STREAMS} streams, $(valgrind --version)"
    : >"$WORK/icount"
    for s in $SERVERS; do
        valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$s.out" \
            "$BIN" --server "$s" --addr 127.0.0.1:0 >"$WORK/vg.$s.log" 2>&1 &
        vpid=$!
        PIDS+=("$vpid")
        port=""
        for _ in $(seq 1 300); do
            port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/vg.$s.log")
            [ -n "$port" ] && break
            sleep 0.1
        done
        [ -n "$port" ] || { echo "server $s did not start under valgrind" >&2; exit 1; }
        i=0
        for p in $PROTOS; do
            load "$p" "$port" 1 >/dev/null
            callgrind_control -z "$vpid" >/dev/null 2>&1
            read -r n e _ < <(load "$p" "$port" "$DUR")
            callgrind_control -d "$vpid" >/dev/null 2>&1
            i=$((i + 1))
            f="$WORK/cg.$s.out.$i"
            for _ in $(seq 1 100); do grep -q '^totals:' "$f" 2>/dev/null && break; sleep 0.1; done
            ir=$(awk '/^totals:/ { print $2 }' "$f")
            [ "$e" -gt 0 ] && echo "warning: $e errors for $p $s" >&2
            awk -v p="$p" -v s="$s" -v ir="$ir" -v n="$n" 'BEGIN { printf "%s %s %d %.0f\n", p, s, n, ir / n }' |
                tee -a "$WORK/icount"
        done
        kill "$vpid" 2>/dev/null || true
        wait "$vpid" 2>/dev/null || true
    done
    echo
    echo "| protocol | server | instructions/request | × best |"
    echo "|---|---|---:|---:|"
    for p in $PROTOS; do
        best=$(awk -v p="$p" '$1 == p { print $4 }' "$WORK/icount" | sort -g | head -1)
        awk -v p="$p" -v b="$best" '$1 == p { printf "| %s | %s | %d | %.3f |\n", $1, $2, $4, $4 / b }' "$WORK/icount"
    done
    exit 0
fi

case " $SERVERS " in *" $REF "*) ;; *) REF=${SERVERS%% *} ;; esac
read -r -a ORDER <<<"$SERVERS"
NS=${#ORDER[@]}
echo "# served: $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), rounds=$ROUNDS dur=${DUR}s h1 conns=$CONNS h2c ${H2_CONNS}x${H2_STREAMS} streams, server_workers=$SERVER_WORKERS, pin=${SERVER_PIN[*]:-none}/${LOAD_PIN[*]:-none}"
echo "# $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(h2load --version | head -1)"
echo "round proto server requests errors req_per_s cpu_us_per_req"
: >"$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
    for p in $PROTOS; do
        for k in $(seq 0 $((NS - 1))); do
            s=${ORDER[$(((k + r - 1) % NS))]}
            t0=$(ticks "${PID[$s]}")
            read -r n e rps < <(load "$p" "${PORT[$s]}" "$DUR")
            t1=$(ticks "${PID[$s]}")
            if [ "$n" -le 0 ]; then
                echo "no requests completed: $p $s" >&2
                exit 1
            fi
            [ "$e" -gt 0 ] && echo "warning: $e errors for $p $s in round $r" >&2
            cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.3f", (b - a) / hz * 1e6 / n }')
            echo "$r $p $s $n $e $rps $cpu" | tee -a "$WORK/results"
        done
    done
done

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v p="$1" -v s="$2" -v c="$3" '$2 == p && $3 == s { print $c }' "$WORK/results"; }
# Paired: each run against the reference server's run of the same round and
# protocol (adjacent in time), then the median of those ratios.
paired() { # proto server column
    awk -v p="$1" -v s="$2" -v ref="$REF" -v c="$3" '
        $2 == p && $3 == s { v[$1] = $c }
        $2 == p && $3 == ref { r[$1] = $c }
        END { for (k in v) if (k in r && r[k] > 0) print v[k] / r[k] }' "$WORK/results"
}
echo
echo "| protocol | server | req/s median (min–max) | × best | req/s ÷ $REF, paired: median (min–max) | server CPU µs/req median (min–max) | × best | CPU ÷ $REF, paired: median (min–max) | errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for p in $PROTOS; do
    best_rps=0
    best_cpu=1e18
    for s in $SERVERS; do
        m=$(col "$p" "$s" 6 | median)
        c=$(col "$p" "$s" 7 | median)
        best_rps=$(awk -v a="$best_rps" -v b="$m" 'BEGIN { print (b > a ? b : a) }')
        best_cpu=$(awk -v a="$best_cpu" -v b="$c" 'BEGIN { print (b < a ? b : a) }')
    done
    for s in $SERVERS; do
        rps=$(col "$p" "$s" 6 | median)
        rmin=$(col "$p" "$s" 6 | sort -g | head -1)
        rmax=$(col "$p" "$s" 6 | sort -g | tail -1)
        cpu=$(col "$p" "$s" 7 | median)
        cmin=$(col "$p" "$s" 7 | sort -g | head -1)
        cmax=$(col "$p" "$s" 7 | sort -g | tail -1)
        errs=$(col "$p" "$s" 5 | awk '{ t += $1 } END { print t + 0 }')
        pr=$(paired "$p" "$s" 6 | median)
        pr0=$(paired "$p" "$s" 6 | sort -g | head -1)
        pr1=$(paired "$p" "$s" 6 | sort -g | tail -1)
        pc=$(paired "$p" "$s" 7 | median)
        pc0=$(paired "$p" "$s" 7 | sort -g | head -1)
        pc1=$(paired "$p" "$s" 7 | sort -g | tail -1)
        awk -v p="$p" -v s="$s" -v r="$rps" -v r0="$rmin" -v r1="$rmax" -v br="$best_rps" \
            -v c="$cpu" -v c0="$cmin" -v c1="$cmax" -v bc="$best_cpu" -v e="$errs" \
            -v pr="${pr:-0}" -v pr0="${pr0:-0}" -v pr1="${pr1:-0}" -v pc="${pc:-0}" -v pc0="${pc0:-0}" -v pc1="${pc1:-0}" \
            'BEGIN { printf "| %s | %s | %.0f (%.0f–%.0f) | %.3f | %.3f (%.3f–%.3f) | %.2f (%.2f–%.2f) | %.3f | %.3f (%.3f–%.3f) | %d |\n",
                     p, s, r, r0, r1, r / br, pr, pr0, pr1, c, c0, c1, c / bc, pc, pc0, pc1, e }'
    done
done
