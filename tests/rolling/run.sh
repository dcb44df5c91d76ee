#!/usr/bin/env bash
# Rolling restart of two instances of the `axum` example behind HAProxy, under
# load from wrk, on loopback. Run twice:
#
#   ours     tower-graceful: readiness 503 at SIGTERM, pre-drain delay (>= HAProxy
#            inter x fall), then drain; the requirement is zero failed requests
#   builtin  GRACEFUL_MODE=builtin: axum's with_graceful_shutdown alone
#            (its failures are expected and only reported)
#
# For each: start A and B, start HAProxy (health check GET /ready every 200 ms,
# fall 2, rise 2, option redispatch, retries 3) and wrk (Lua mix of /,
# /slow?ms=200 and /stream?chunks=3 on keep-alive connections). Meanwhile:
# SIGTERM A, wait for it to exit (exit time recorded), start it again, wait
# until HAProxy has it UP (stats socket, bounded), then the same for B. Prints
# the figures of both runs side by side.
#
# Exit code: 0 iff the `ours` run had no non-2xx response and no socket error
# (and both instances exited cleanly and came back UP); 1 otherwise; 2 for a
# setup problem (missing tool, build failure, something not starting in time).
#
# Needs: haproxy, wrk (apt-get install -y haproxy wrk), cargo unless AXUM_BIN
# is given. Installs nothing itself.
#
# Environment:
#   AXUM_BIN          path to a built `axum` example (default: cargo build it)
#   ROLLING_RELEASE=1 build with --release (default: debug)
#   ROLLING_DURATION  wrk seconds per run (default 10)
#   ROLLING_CONNECTIONS / ROLLING_THREADS  wrk -c / -t (default 64 / 2)
#   ROLLING_DELAY_MS  pause between requests per connection (default 2)
#   ROLLING_PRE_DRAIN pre-drain delay of `ours` (default 1s; HAProxy needs
#                     inter 200ms x fall 2 = 400ms, plus one check period)
#   ROLLING_ONLY=ours|builtin  run one variant
#   ROLLING_KEEP=1    keep the work directory (logs, configs)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

DURATION=${ROLLING_DURATION:-10}
CONNECTIONS=${ROLLING_CONNECTIONS:-64}
THREADS=${ROLLING_THREADS:-2}
DELAY_MS=${ROLLING_DELAY_MS:-2}
PRE_DRAIN=${ROLLING_PRE_DRAIN:-1s}
DEADLINE=10s
INTER_MS=200
FALL=2
RISE=2
WARMUP_S=1.5        # load before the first SIGTERM
EXIT_LIMIT_S=20     # an instance that has not exited by then is killed (and counted as a failure)
UP_LIMIT_S=10       # bound on waiting for HAProxy to mark a server UP

say() { printf '[rolling %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "error: $*"; exit 2; }

# ---------------------------------------------------------------- tools --
missing=()
for tool in haproxy wrk ss; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    say "missing: ${missing[*]}"
    say "install with: apt-get install -y haproxy wrk iproute2"
    exit 2
fi
(( BASH_VERSINFO[0] >= 5 )) || die "bash >= 5 needed (EPOCHREALTIME)"

if [[ -n ${AXUM_BIN:-} ]]; then
    bin=$AXUM_BIN
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found; build the axum example and set AXUM_BIN"
    profile=debug
    flags=()
    if [[ ${ROLLING_RELEASE:-0} == 1 ]]; then profile=release; flags=(--release); fi
    say "building the axum example ($profile)"
    (cd "$root" && cargo build -q -p tower-graceful-examples --bin axum "${flags[@]}") ||
        die "cargo build failed"
    target=${CARGO_TARGET_DIR:-$root/target}
    [[ $target == /* ]] || target=$root/$target
    bin=$target/$profile/axum
fi
[[ -x $bin ]] || die "not an executable: $bin"

work=$(mktemp -d "${TMPDIR:-/tmp}/tower-graceful-rolling.XXXXXX")

# ----------------------------------------------------- process tracking --
# Every process this script starts is recorded here and killed by PID on exit.
declare -A live=()   # pid -> name

track() { live[$1]=$2; }
reaped() { unset "live[$1]"; }

cleanup() {
    local rc=$?
    # Only the script itself cleans up, never a subshell that inherited the trap.
    [[ $BASHPID == "$$" ]] || return 0
    set +e
    local pid
    for pid in "${!live[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${!live[@]}"; do
        # Bounded: anything still there after the watchdog gets SIGKILL.
        [[ -n ${live[$pid]:-} ]] && wait_pid "$pid" 3 2>/dev/null
    done
    if [[ ${ROLLING_KEEP:-0} == 1 ]]; then
        say "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# wait_pid PID LIMIT_S: waits for PID (a child of this shell, so never call
# it in a subshell) to exit; a watchdog SIGKILLs it after LIMIT_S seconds.
# Sets WAIT_RC to its exit status (137 if it had to be killed).
wait_pid() {
    local pid=$1 limit=$2 rc=0
    # The watchdog: a subshell that sleeps (in a child it kills on SIGTERM),
    # then kills PID. Everything by PID.
    (
        trap - EXIT INT
        sleep "$limit" &
        nap=$!
        trap 'kill "$nap" 2>/dev/null; exit 0' TERM
        wait "$nap"
        kill -KILL "$pid" 2>/dev/null
    ) &
    local wd=$!
    track "$wd" watchdog
    wait "$pid" || rc=$?
    kill -TERM "$wd" 2>/dev/null || true
    wait "$wd" 2>/dev/null || true
    reaped "$wd"
    reaped "$pid"
    WAIT_RC=$rc
}

# A port nothing listens on now (HAProxy's frontend and stats socket; the
# instances pick their own with PORT=0).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( (RANDOM % 20000) + 30000 ))
        if ! ss -Htln "sport = :$p" | grep -q .; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# ------------------------------------------------------------ instances --
# start_instance NAME PORT MODE: starts the axum example, waits (bounded) for
# its `listening on` line; sets INST_PID and INST_PORT.
start_instance() {
    local name=$1 port=$2 mode=$3 log=$work/$1.$4.out
    : >"$log"
    env PORT="$port" GRACEFUL_MODE="$mode" GRACEFUL_PRE_DRAIN="$PRE_DRAIN" \
        GRACEFUL_DEADLINE="$DEADLINE" RUST_LOG=warn \
        "$bin" >"$log" 2>>"$work/$name.err" &
    INST_PID=$!
    track "$INST_PID" "$name"
    local line="" deadline=$(( SECONDS + 10 ))
    while (( SECONDS < deadline )); do
        line=$(grep -m1 -o 'listening on [0-9.]*:[0-9]*' "$log" || true)
        [[ -n $line ]] && break
        kill -0 "$INST_PID" 2>/dev/null || die "$name exited at start: $(tail -3 "$work/$name.err")"
        sleep 0.02
    done
    [[ -n $line ]] || die "$name did not print 'listening on' within 10s"
    INST_PORT=${line##*:}
}

# ------------------------------------------------------------- haproxy --
hap() { # hap COMMAND: one command on the stats socket, output on stdout
    local fd line
    exec {fd}<>"/dev/tcp/127.0.0.1/$STATS_PORT" || return 1
    printf '%s\n' "$1" >&"$fd"
    # HAProxy answers and closes; every read is bounded (builtins only).
    while IFS= read -r -t 2 line <&"$fd"; do
        printf '%s\n' "$line"
    done
    exec {fd}>&-
}

# The `status` column of `show stat` for backend server NAME (UP, DOWN, ...).
server_status() {
    hap "show stat" 2>/dev/null | awk -F, -v srv="$1" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == "status") col = i; next }
        $1 == "be" && $2 == srv { print $col }'
}

# A backend counter (`wretr`, `wredis`, ...) for the backend line.
backend_stat() {
    hap "show stat" 2>/dev/null | awk -F, -v key="$1" '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) if ($i == key) col = i; next }
        $1 == "be" && $2 == "BACKEND" { print $col }'
}

wait_up() { # wait_up SERVER: bounded poll of the stats socket until UP; sets UP_AFTER
    local t0 deadline=$(( SECONDS + UP_LIMIT_S ))
    t0=$(now)
    while (( SECONDS < deadline )); do
        if [[ $(server_status "$1") == UP ]]; then
            UP_AFTER=$(elapsed "$t0" "$(now)")
            return 0
        fi
        sleep 0.05
    done
    UP_AFTER=never
    return 1
}

start_haproxy() { # start_haproxy A_PORT B_PORT
    local try
    for try in 1 2 3; do
        FRONT_PORT=$(free_port)
        STATS_PORT=$(free_port)
        cat >"$work/haproxy.cfg" <<EOF
global
    maxconn 4096
    stats socket ipv4@127.0.0.1:$STATS_PORT level admin
    stats timeout 5s

defaults
    mode http
    option redispatch
    retries 3
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s

frontend fe
    bind 127.0.0.1:$FRONT_PORT
    default_backend be

backend be
    balance roundrobin
    option httpchk
    http-check send meth GET uri /ready
    http-check expect status 200
    default-server inter ${INTER_MS}ms fastinter 100ms downinter ${INTER_MS}ms fall $FALL rise $RISE
    server a 127.0.0.1:$1 check
    server b 127.0.0.1:$2 check
EOF
        haproxy -c -q -f "$work/haproxy.cfg" || die "haproxy rejected its configuration"
        haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
        HAP_PID=$!
        track "$HAP_PID" haproxy
        local deadline=$(( SECONDS + 5 ))
        while (( SECONDS < deadline )) && kill -0 "$HAP_PID" 2>/dev/null; do
            if hap "show info" 2>/dev/null | grep -q '^Name: HAProxy'; then
                return 0
            fi
            sleep 0.05
        done
        wait_pid "$HAP_PID" 1   # it failed (a port taken meanwhile?): try again
        say "haproxy did not start (try $try): $(tail -2 "$work/haproxy.log")"
    done
    die "haproxy would not start"
}

# ----------------------------------------------------------------- wrk --
cat >"$work/mix.lua" <<EOF
-- A mix of fast, slow and streamed requests on keep-alive connections.
local paths = { "/", "/slow?ms=200", "/", "/stream?chunks=3", "/", "/" }
local threads = {}
local i = 0
sent = 0
statuses = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    i = math.random(#paths)
end

function delay()
    return $DELAY_MS
end

function request()
    sent = sent + 1
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total_sent, by = 0, {}
    for _, t in ipairs(threads) do
        total_sent = total_sent + t:get("sent")
        for code, n in pairs(t:get("statuses")) do
            by[code] = (by[code] or 0) + n
        end
    end
    local ok, bad, parts = 0, 0, {}
    for code, n in pairs(by) do
        if code >= 200 and code < 300 then ok = ok + n else bad = bad + n end
        table.insert(parts, code .. "=" .. n)
    end
    table.sort(parts)
    local e = summary.errors
    io.write(string.format(
        "RESULT sent=%d completed=%d ok2xx=%d non2xx=%d connect=%d read=%d write=%d timeout=%d statuses=%s\n",
        total_sent, summary.requests, ok, bad, e.connect, e.read, e.write, e.timeout,
        table.concat(parts, ",")))
end
EOF

# --------------------------------------------------------------- a run --
declare -A R=()   # "variant.key" -> value

roll() { # roll VARIANT NAME: SIGTERM, wait for exit, restart, wait UP
    local v=$1 name=$2 mode=$3 pid port t0 rc up
    pid=${PIDS[$name]}
    port=${PORTS[$name]}
    t0=$(now)
    kill -TERM "$pid"
    wait_pid "$pid" "$EXIT_LIMIT_S"
    rc=$WAIT_RC
    R[$v.$name.exit]=$(elapsed "$t0" "$(now)")
    R[$v.$name.rc]=$rc
    say "$v: $name exited after ${R[$v.$name.exit]}s (status $rc); restarting on :$port"
    start_instance "$name" "$port" "$mode" restart
    PIDS[$name]=$INST_PID
    wait_up "$name" || true
    up=$UP_AFTER
    R[$v.$name.up]=$up
    say "$v: $name back UP in haproxy ${up}s after restart"
}

run_variant() { # run_variant ours|builtin
    local v=$1 mode
    [[ $v == ours ]] && mode=graceful || mode=builtin
    declare -gA PIDS=() PORTS=()
    local what="GRACEFUL_MODE=$mode"
    [[ $mode == graceful ]] && what+=", pre-drain $PRE_DRAIN"
    say "$v: starting A and B ($what)"
    for name in a b; do
        start_instance "$name" 0 "$mode" first
        PIDS[$name]=$INST_PID
        PORTS[$name]=$INST_PORT
    done
    start_haproxy "${PORTS[a]}" "${PORTS[b]}"
    wait_up a || die "$v: a never UP in haproxy"
    wait_up b || die "$v: b never UP in haproxy"
    say "$v: haproxy :$FRONT_PORT -> a :${PORTS[a]}, b :${PORTS[b]}; wrk ${DURATION}s, $CONNECTIONS connections"

    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s \
        -s "$work/mix.lua" "http://127.0.0.1:$FRONT_PORT" >"$work/wrk.$v.out" 2>&1 &
    local wrk_pid=$!
    track "$wrk_pid" wrk
    sleep "$WARMUP_S"   # steady load before the first restart (a load phase, not a wait)

    roll "$v" a "$mode"
    roll "$v" b "$mode"

    local rc
    wait_pid "$wrk_pid" $(( DURATION + 15 ))
    rc=$WAIT_RC
    [[ $rc == 0 ]] || { cat "$work/wrk.$v.out" >&2; die "$v: wrk failed (status $rc)"; }
    local line
    line=$(grep '^RESULT' "$work/wrk.$v.out") || { cat "$work/wrk.$v.out" >&2; die "$v: no RESULT from wrk"; }
    local kv
    for kv in ${line#RESULT }; do
        R[$v.${kv%%=*}]=${kv#*=}
    done
    R[$v.retries]="$(backend_stat wretr) / $(backend_stat wredis)"
    R[$v.unanswered]=$(( ${R[$v.sent]} - ${R[$v.completed]} ))
    R[$v.rps]=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.$v.out")

    for name in a b; do   # stop the restarted instances
        kill -TERM "${PIDS[$name]}" 2>/dev/null || true
        wait_pid "${PIDS[$name]}" "$EXIT_LIMIT_S"
    done
    kill -TERM "$HAP_PID" 2>/dev/null || true
    wait_pid "$HAP_PID" 5
    say "$v: done: ${line#RESULT }"
}

variants=(ours builtin)
case ${ROLLING_ONLY:-} in
    "") ;;
    ours | builtin) variants=("$ROLLING_ONLY") ;;
    *) die "ROLLING_ONLY must be ours or builtin" ;;
esac

for v in "${variants[@]}"; do
    run_variant "$v"
done

# --------------------------------------------------------------- table --
row() { # row LABEL KEY
    local line
    line=$(printf '%-34s' "$1")
    for v in "${variants[@]}"; do
        line+=$(printf ' %-22s' "${R[$v.$2]:--}")
    done
    echo "$line"
}
echo
header=$(printf '%-34s' "rolling restart, ${DURATION}s of wrk")
for v in "${variants[@]}"; do
    [[ $v == ours ]] && label="ours (pre-drain $PRE_DRAIN)" || label="builtin (axum only)"
    header+=$(printf ' %-22s' "$label")
done
echo "$header"
row "requests issued by wrk" sent
row "responses received" completed
row "  still open when wrk stopped" unanswered
row "  2xx" ok2xx
row "  non-2xx" non2xx
row "  by status" statuses
row "socket errors: connect" connect
row "socket errors: read" read
row "socket errors: write" write
row "socket errors: timeout" timeout
row "requests/s" rps
row "A exit after SIGTERM (s)" a.exit
row "A exit status" a.rc
row "A UP again after restart (s)" a.up
row "B exit after SIGTERM (s)" b.exit
row "B exit status" b.rc
row "B UP again after restart (s)" b.up
row "haproxy retries / redispatches" retries
echo

status=0
for v in "${variants[@]}"; do
    [[ $v == ours ]] || continue
    failures=$(( ${R[ours.non2xx]:-1} + ${R[ours.connect]:-1} + ${R[ours.read]:-1} + ${R[ours.write]:-1} + ${R[ours.timeout]:-1} ))
    if (( failures == 0 )) && [[ ${R[ours.a.rc]} == 0 && ${R[ours.b.rc]} == 0 ]] &&
        [[ ${R[ours.a.up]} != never && ${R[ours.b.up]} != never ]]; then
        echo "ours: PASS (no non-2xx response, no socket error, clean exits)"
    else
        echo "ours: FAIL ($failures failed requests; exit statuses ${R[ours.a.rc]}/${R[ours.b.rc]})"
        status=1
    fi
done
if [[ " ${variants[*]} " == *" builtin "* ]]; then
    echo "builtin: $(( ${R[builtin.non2xx]:-0} + ${R[builtin.connect]:-0} + ${R[builtin.read]:-0} + ${R[builtin.write]:-0} + ${R[builtin.timeout]:-0} )) failed requests (reported, not required)"
fi
exit "$status"
