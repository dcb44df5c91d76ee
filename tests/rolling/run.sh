#!/usr/bin/env bash
# What users of a load balancer lose during a rolling restart, measured
# strictly: HAProxy with `retries 0` and no `option redispatch`, clients that
# never retry, every failed request counted by kind. Loopback only.
#
# Scenarios (ROLLING_ONLY picks some):
#
#   l7    HAProxy `mode http` in front of two `axum` examples; health check
#         GET /ready. The balancer picks a server per request, so it can move
#         requests away as soon as the check fails.
#   l4    HAProxy `mode tcp` in front of the same two `axum` examples (same
#         check). The balancer can move only new connections: HTTP/1.1
#         keep-alive connections stay pinned to the instance they reached.
#   grpc  HAProxy `mode tcp` in front of the gRPC ports of two `multi`
#         examples (check GET /ready on their admin port). HTTP/2: one
#         connection per client, many calls on it; the client is tonic's
#         generated client on hyper-util's pooled client (its defaults).
#   grpc-channel        the same, on tonic's own `Channel`.
#   grpc-channel-retry  the same, on tonic's `Channel` below
#         `tower_graceful::client::TransparentRetry` (feature `client`).
#   grpcio   the same load from grpcio, the Python binding of gRPC C-core
#         (tests/rolling/clients/grpc_load.py), its default settings.
#   grpc-js  the same load from @grpc/grpc-js on Node
#         (tests/rolling/clients/grpc_load.js), its default settings.
#   grpc-go  the same load from grpc-go (tests/rolling/clients/grpc_load.go,
#         built with go against Debian's golang-google-grpc-dev), its
#         default settings.
#
# Variants: `ours` (tower-graceful, the examples' default mode, pre-drain
# delay >= check interval x fall + one interval) must lose nothing; `builtin`
# (GRACEFUL_MODE=builtin: axum's own with_graceful_shutdown, axum example
# only) runs for contrast and its failures are only reported.
#
# One run: start A and B, start HAProxy, wait until it has both UP, start the
# load, let it run WARMUP seconds, then SIGTERM A, wait for A to exit, start A
# again on the same port, wait until HAProxy has it UP; the same for B. The
# load runs on for ROLLING_TAIL seconds after that, then is told to stop
# (requests in flight end normally and are counted).
#
# Load (HTTP, oha, keep-alive HTTP/1.1, no retries):
#   fast    GET / on 20 connections at 300 requests/s in total
#   slow    GET /slow?ms=1000 back to back on 8 connections
#   stream  GET /stream?chunks=5 (5 chunks 200 ms apart) back to back on 8
# Load (gRPC, tests/src/bin/grpc_load.rs, a tonic client of demo.v1.Demo;
# the grpcio, grpc-js and grpc-go scenarios run
# tests/rolling/clients/grpc_load.py, .js and .go, the same calls, flags and
# JSON result):
#   8 connections (one HTTP/2 connection each), on each: unary Hello every
#   25 ms and server-streaming Count (5 ticks, 200 ms apart) back to back.
#
# Output: one table per scenario (a column per variant and run), then one
# machine-readable line per run and one per scenario and variant:
#   ROLLING scenario=l4 variant=ours run=1 ok=... failed=0 ... result=pass
#   ROLLING scenario=l4 variant=ours run=all runs=3 ok=... failed=0 failed_runs=0 result=pass
#
# Exit status: 0 iff every `ours` run of every scenario but grpc-channel
# (l7, l4, grpc, grpc-channel-retry, grpcio, grpc-js, grpc-go) lost no
# request and, in every scenario, both instances exited cleanly (status 0,
# before the kill limit) and came back UP; 1 otherwise; 2 for a setup
# problem (missing tool, build failure, something that does not start, a
# load that did not run). The grpc-channel scenario's lost calls are
# reported, not judged, unless ROLLING_GRPC_STRICT=1.
# grpc (hyper-util's pool) lost 3 calls in 16 runs (A/B, 2026-12-03) before
# `serve` sent each GOAWAY at a calm moment, 0 in 46 runs since (and grpc-go
# 0 in 23): a capture showed hyper's client failing a call it had already
# handed to h2 when a GOAWAY arrived just after another stream's end (its
# dispatch re-checks the connection after send_request).
# grpc-channel: hyper's HTTP/2 client under a bare `Channel` fails
# a call it queued on a connection that had just read a GOAWAY (hyper#2500).
# `serve` sends each GOAWAY when its connection has no stream open, which
# leaves few (27 in ten runs, 2026-12-03), but a client whose calls follow
# each other back to back has no such moment; they all fail unsent, as
# canceled, which `TransparentRetry` sends again (grpc-channel-retry).
#
# Needs: haproxy, oha (cargo install oha --locked), jq, ss (iproute2), bash
# >= 5; cargo unless the binaries are given; for grpcio, python3 with the
# `grpcio` package importable (PYTHONPATH); for grpc-js, node with
# `@grpc/grpc-js` on NODE_PATH (.ci/run installs both, pinned, under
# target/rolling-clients); for grpc-go, go and grpc-go's source in GOPATH
# layout (Debian: apt-get install golang-go golang-google-grpc-dev, which puts
# it under /usr/share/gocode; built offline in GOPATH mode into
# CARGO_TARGET_DIR/grpc-go) unless GRPC_GO_BIN is given. Installs nothing
# itself.
#
# Environment:
#   ROLLING_ONLY=l7,l4,grpc,grpc-channel,grpc-channel-retry,grpcio,grpc-js,grpc-go
#                             scenarios to run (comma-separated; default all)
#   ROLLING_VARIANT=ours|builtin  one variant only (default both)
#   ROLLING_RUNS=N            repeat every scenario N times (default 1)
#   ROLLING_KEEP=1            keep the work directory (logs, configs, JSON)
#   ROLLING_GRPC_STRICT=1     fail on a call lost by the bare Channel too
#   AXUM_BIN, MULTI_BIN, GRPC_LOAD_BIN  built binaries (default: cargo build
#                             the ones needed, debug, into CARGO_TARGET_DIR)
#   GRPC_GO_BIN               built grpc-go client (default: go build it into
#                             CARGO_TARGET_DIR/grpc-go, GOPATH mode, offline)
#   ROLLING_GOPATH            where grpc-go's source is (default
#                             /usr/share/gocode, Debian's)
#   ROLLING_RELEASE=1         build with --release
#   ROLLING_PRE_DRAIN         pre-drain delay of `ours` (default 2s; `auto`:
#                             the adaptive pre-drain, at most
#                             ROLLING_PRE_DRAIN_MAX, default 10s; HAProxy
#                             needs up to inter 500ms x (fall 2 + 1) = 1.5s)
#   ROLLING_WARMUP            seconds of load before the first SIGTERM (default 2)
#   ROLLING_TAIL              seconds of load after B is back UP (default 2)
#   ROLLING_RATE, ROLLING_FAST_CONNECTIONS  fast HTTP load (default 300, 20)
#   ROLLING_SLOW_CONNECTIONS, ROLLING_STREAM_CONNECTIONS  (default 8, 8)
#   ROLLING_GRPC_CONNECTIONS  gRPC connections (default 8)
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

say() { printf '[rolling %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    say "setup error: $*"
    exit 2
}
trap 'rc=$?; say "setup error: command failed (status $rc) at line $LINENO [$BASHPID/$$ ${FUNCNAME[*]}]: $BASH_COMMAND"; exit 2' ERR

(( BASH_VERSINFO[0] >= 5 )) || die "bash >= 5 needed (EPOCHREALTIME)"

# ---------------------------------------------------------------- settings --
INTER_MS=500
FALL=2
RISE=2
PRE_DRAIN=${ROLLING_PRE_DRAIN:-2s}
DEADLINE=10s
WARMUP_S=${ROLLING_WARMUP:-2}
TAIL_S=${ROLLING_TAIL:-2}  # load after B is back UP
RATE=${ROLLING_RATE:-300}
FAST_CONNS=${ROLLING_FAST_CONNECTIONS:-20}
SLOW_CONNS=${ROLLING_SLOW_CONNECTIONS:-8}
SLOW_MS=1000
STREAM_CONNS=${ROLLING_STREAM_CONNECTIONS:-8}
STREAM_CHUNKS=5
GRPC_CONNS=${ROLLING_GRPC_CONNECTIONS:-8}
GRPC_UNARY_MS=25
GRPC_TICKS=5
GRPC_TICK_MS=200
REQUEST_TIMEOUT_S=10  # a request (or gRPC call) that takes longer is a failure
UP_LIMIT_S=10         # bound on waiting for HAProxy to mark a server UP
RUNS=${ROLLING_RUNS:-1}

# Whole seconds (rounded up) of a duration like 2s / 1500ms / 0.
secs_of() {
    local d=$1
    case $d in
        0) echo 0 ;;
        *ms) echo $(( (${d%ms} + 999) / 1000 )) ;;
        *s) echo "${d%s}" ;;
        *) die "cannot read the duration $d (use 2s or 1500ms)" ;;
    esac
}
millis_of() {
    local d=$1
    case $d in
        0) echo 0 ;;
        *ms) echo "${d%ms}" ;;
        *s) echo $(( ${d%s} * 1000 )) ;;
        *) die "cannot read the duration $d (use 2s or 1500ms)" ;;
    esac
}
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || die "ROLLING_RUNS must be a number from 1 to 99"
PRE_DRAIN_MAX=${ROLLING_PRE_DRAIN_MAX:-10s}
if [[ $PRE_DRAIN == auto ]]; then
    # Adaptive: it ends on evidence, at most PRE_DRAIN_MAX after the signal.
    pre_drain_longest=$PRE_DRAIN_MAX
    millis_of "$PRE_DRAIN_MAX" >/dev/null
else
    pre_drain_longest=$PRE_DRAIN
    pre_drain_ms=$(millis_of "$PRE_DRAIN")
    if (( pre_drain_ms < INTER_MS * (FALL + 1) )); then
        say "warning: pre-drain $PRE_DRAIN < inter ${INTER_MS}ms x (fall $FALL + 1): HAProxy may still send to a draining instance"
    fi
fi
pre_drain_shown=$PRE_DRAIN
[[ $PRE_DRAIN == auto ]] && pre_drain_shown="auto (max $PRE_DRAIN_MAX)"
EXIT_LIMIT_S=$(( $(secs_of "$pre_drain_longest") + $(secs_of "$DEADLINE") + 5 ))

# The transport of grpc_load's tonic client in a gRPC scenario.
transport_of() {
    case $1 in
        grpc) echo pool ;;
        grpc-channel) echo channel ;;
        grpc-channel-retry) echo channel-retry ;;
        grpcio) echo grpcio ;;
        grpc-js) echo grpc-js ;;
        grpc-go) echo grpc-go ;;
    esac
}
is_grpc() { [[ -n $(transport_of "$1") ]]; }
# Scenarios whose lost calls are reported, not judged (unless
# ROLLING_GRPC_STRICT=1): grpc-channel, a bare tonic `Channel`, whose
# hyper client fails a call it queued on a connection that had just read a
# GOAWAY, unsent (hyper#2500; see the header). `TransparentRetry` below it
# sends such a call again, and that scenario (grpc-channel-retry) is judged.
reported_only() {
    [[ ${ROLLING_GRPC_STRICT:-0} != 1 && $1 == grpc-channel ]]
}
scenarios=(l7 l4 grpc grpc-channel grpc-channel-retry grpcio grpc-js grpc-go)
if [[ -n ${ROLLING_ONLY:-} ]]; then
    IFS=', ' read -r -a scenarios <<<"$ROLLING_ONLY"
    for s in "${scenarios[@]}"; do
        [[ $s == l7 || $s == l4 ]] || is_grpc "$s" ||
            die "ROLLING_ONLY: unknown scenario $s (use l7, l4, grpc, grpc-channel, grpc-channel-retry, grpcio, grpc-js, grpc-go)"
    done
fi
case ${ROLLING_VARIANT:-} in
    "" | ours | builtin) ;;
    *) die "ROLLING_VARIANT must be ours or builtin" ;;
esac
variants_of() { # the variants of scenario $1
    local all=(ours)
    is_grpc "$1" || all+=(builtin)
    if [[ -n ${ROLLING_VARIANT:-} ]]; then
        [[ " ${all[*]} " == *" $ROLLING_VARIANT "* ]] && echo "$ROLLING_VARIANT"
    else
        echo "${all[*]}"
    fi
}
has() { [[ " ${scenarios[*]} " == *" $1 "* ]]; }
need_http=0 need_grpc=0 need_grpc_load=0
if has l7 || has l4; then need_http=1; fi
for s in "${scenarios[@]}"; do
    if is_grpc "$s"; then need_grpc=1; fi
    # grpc_load (the tonic client) for all but the other languages' clients.
    if is_grpc "$s" && [[ $s != grpcio && $s != grpc-js && $s != grpc-go ]]; then need_grpc_load=1; fi
done

# ---------------------------------------------------------------- tools --
missing=()
tools=(haproxy jq ss)
(( need_http )) && tools+=(oha)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    say "missing: ${missing[*]}"
    say "install with: apt-get install -y haproxy jq iproute2; cargo install oha --locked"
    exit 2
fi
if has grpcio; then
    python3 -c 'import grpc' 2>/dev/null ||
        die "grpcio: python3 cannot import grpc (pip install --target DIR grpcio, then PYTHONPATH=DIR)"
fi
if has grpc-js; then
    node -e "require('@grpc/grpc-js')" 2>/dev/null ||
        die "grpc-js: node cannot load @grpc/grpc-js (npm install --prefix DIR @grpc/grpc-js, then NODE_PATH=DIR/node_modules)"
fi
GRPC_GO=${GRPC_GO_BIN:-}
if has grpc-go && [[ -z $GRPC_GO ]]; then
    # GOPATH mode, offline: grpc-go and its dependencies come from Debian's
    # golang-google-grpc-dev (/usr/share/gocode), never from the network.
    gopath=${ROLLING_GOPATH:-/usr/share/gocode}
    command -v go >/dev/null 2>&1 ||
        die "grpc-go: go not found (apt-get install golang-go golang-google-grpc-dev, or set GRPC_GO_BIN)"
    [[ -f $gopath/src/google.golang.org/grpc/clientconn.go ]] ||
        die "grpc-go: no grpc-go source under $gopath/src/google.golang.org/grpc (apt-get install golang-google-grpc-dev, or set ROLLING_GOPATH or GRPC_GO_BIN)"
    go_out=${CARGO_TARGET_DIR:-$root/target}
    [[ $go_out == /* ]] || go_out=$root/$go_out
    go_out=$go_out/grpc-go
    mkdir -p "$go_out"
    say "building: tests/rolling/clients/grpc_load.go with $(go version | cut -d' ' -f3) and grpc-go $(sed -n 's/^const Version = "\(.*\)"/\1/p' "$gopath/src/google.golang.org/grpc/version.go")"
    (cd "$root" && GO111MODULE=off GOPATH="$gopath" GOFLAGS= GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
        GOCACHE="$go_out/cache" go build -o "$go_out/grpc_load" tests/rolling/clients/grpc_load.go) ||
        die "grpc-go: go build of tests/rolling/clients/grpc_load.go failed"
    GRPC_GO=$go_out/grpc_load
fi
if has grpc-go; then [[ -x $GRPC_GO ]] || die "grpc-go: not an executable: $GRPC_GO"; fi

# ------------------------------------------------------------- binaries --
AXUM=${AXUM_BIN:-}
MULTI=${MULTI_BIN:-}
GRPC_LOAD=${GRPC_LOAD_BIN:-}
# One cargo invocation per package, so that each resolves the features it
# would resolve alone (those that the tests' own builds of the examples
# already compiled), not a union that would rebuild the dependencies.
build_examples=() build_tests=()
(( need_http )) && [[ -z $AXUM ]] && build_examples+=(--bin axum)
if (( need_grpc )); then
    [[ -z $MULTI ]] && build_examples+=(--bin multi)
fi
(( need_grpc_load )) && [[ -z $GRPC_LOAD ]] && build_tests+=(--bin grpc_load)
if ((${#build_examples[@]} + ${#build_tests[@]})); then
    command -v cargo >/dev/null 2>&1 || die "cargo not found; build the binaries and set AXUM_BIN, MULTI_BIN, GRPC_LOAD_BIN"
    profile=debug
    flags=()
    if [[ ${ROLLING_RELEASE:-0} == 1 ]]; then profile=release; flags=(--release); fi
    if ((${#build_examples[@]})); then
        say "building ($profile): tower-graceful-examples ${build_examples[*]}"
        (cd "$root" && cargo build -q "${flags[@]}" -p tower-graceful-examples "${build_examples[@]}") ||
            die "cargo build failed"
    fi
    if ((${#build_tests[@]})); then
        say "building ($profile): tower-graceful-tests ${build_tests[*]}"
        (cd "$root" && cargo build -q "${flags[@]}" -p tower-graceful-tests "${build_tests[@]}") ||
            die "cargo build failed"
    fi
    target=${CARGO_TARGET_DIR:-$root/target}
    [[ $target == /* ]] || target=$root/$target
    [[ -n $AXUM ]] || AXUM=$target/$profile/axum
    [[ -n $MULTI ]] || MULTI=$target/$profile/multi
    [[ -n $GRPC_LOAD ]] || GRPC_LOAD=$target/$profile/grpc_load
fi
if (( need_http )); then [[ -x $AXUM ]] || die "not an executable: $AXUM"; fi
if (( need_grpc )); then
    [[ -x $MULTI ]] || die "not an executable: $MULTI"
fi
if (( need_grpc_load )); then [[ -x $GRPC_LOAD ]] || die "not an executable: $GRPC_LOAD"; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tower-graceful-rolling.XXXXXX")
started_at=$SECONDS

# ----------------------------------------------------- process tracking --
# Every process this script starts is recorded here and ended by its PID.
declare -A live=()   # pid -> name

track() { live[$1]=$2; }
reaped() { unset "live[$1]"; }

cleanup() {
    local rc=$?
    # Only the script itself cleans up, never a subshell that inherited the trap.
    [[ $BASHPID == "$$" ]] || return 0
    set +e
    trap - ERR
    local pid
    for pid in "${!live[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${!live[@]}"; do
        # Bounded: anything still there after 3 s gets SIGKILL.
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
# A child forked to run a command (before its exec) still has these traps:
# it must just go, without cleaning up after the script.
trap '[[ $BASHPID == "$$" ]] || exit 0; exit 130' INT
trap '[[ $BASHPID == "$$" ]] || exit 0; exit 143' TERM

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# wait_pid PID LIMIT_S: waits for PID (a child of this shell, so never call
# it in a subshell) to exit; a watchdog SIGKILLs it after LIMIT_S seconds.
# Sets WAIT_RC to its exit status (137 if it had to be killed).
#
# The watchdog is a fresh bash reading a FIFO with a timeout: told "done"
# through the FIFO, it goes. No signal is ever sent to it (a signal that
# reached it between fork and exec would run this script's traps there).
wait_pid() {
    local pid=$1 limit=$2 rc=0 fifo fd wd
    if ! running "$pid"; then # already gone: no watchdog needed
        wait "$pid" || rc=$?
        reaped "$pid"
        WAIT_RC=$rc
        return 0
    fi
    fifo=$work/.watchdog.$pid
    rm -f "$fifo"
    mkfifo "$fifo"
    exec {fd}<>"$fifo"   # held open until the watchdog is gone: "done" cannot be lost
    bash -c 'exec 3<>"$3"; read -r -t "$1" _ <&3 || kill -KILL "$2" 2>/dev/null' \
        watchdog "$limit" "$pid" "$fifo" &
    wd=$!
    track "$wd" watchdog
    wait "$pid" || rc=$?
    echo done >&"$fd"
    wait "$wd" || true
    exec {fd}>&-
    rm -f "$fifo"
    reaped "$wd"
    reaped "$pid"
    WAIT_RC=$rc
}

# Whether PID is still running (a zombie, i.e. exited but not yet waited
# for, counts as gone).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# A port nothing listens on now (HAProxy's frontend and stats socket; the
# instances pick their own with port 0 and keep it across restarts).
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

# wait_line FILE REGEX PID WHAT: bounded wait (10 s) until FILE has a line
# matching REGEX; fails early if PID exits. Prints the first match.
wait_line() {
    local file=$1 re=$2 pid=$3 what=$4 line deadline=$(( SECONDS + 10 ))
    while (( SECONDS < deadline )); do
        line=$(grep -m1 -oE "$re" "$file" 2>/dev/null || true)
        if [[ -n $line ]]; then
            echo "$line"
            return 0
        fi
        running "$pid" || die "$what exited at start: $(tail -3 "$file" "${file%.out}.err" 2>/dev/null | tr '\n' ' ')"
        sleep 0.02
    done
    die "$what did not print /$re/ within 10s"
}

# ------------------------------------------------------------ instances --
# start_instance NAME: starts instance NAME (a or b) of the current run's
# kind, on its ports (0 the first time: then the ports it picked are kept
# for the restarts). Sets PID[NAME] and the ports.
declare -A PID=() PORT=() GPORT=() APORT=() STARTS=()
start_instance() {
    local name=$1 n log err
    n=$(( ${STARTS[$name]:-0} + 1 ))
    STARTS[$name]=$n
    log=$rundir/$name.$n.out
    err=$rundir/$name.$n.err
    : >"$log"
    local envs=(RUST_LOG=${ROLLING_SERVER_LOG:-warn} GRACEFUL_PRE_DRAIN="$PRE_DRAIN" GRACEFUL_PRE_DRAIN_MAX="$PRE_DRAIN_MAX" GRACEFUL_DEADLINE="$DEADLINE")
    if [[ $VARIANT == builtin ]]; then
        envs+=(GRACEFUL_MODE=builtin GRACEFUL_PRE_DRAIN=0)
    fi
    if [[ $KIND == axum ]]; then
        env -u GRACEFUL_MODE "${envs[@]}" PORT="${PORT[$name]:-0}" \
            "$AXUM" >"$log" 2>"$err" &
        PID[$name]=$!
        track "${PID[$name]}" "$name"
        local line
        line=$(wait_line "$log" 'listening on [0-9.]+:[0-9]+' "${PID[$name]}" "$name")
        PORT[$name]=${line##*:}
    else
        env -u GRACEFUL_MODE "${envs[@]}" PORT="${PORT[$name]:-0}" \
            GRPC_PORT="${GPORT[$name]:-0}" ADMIN_PORT="${APORT[$name]:-0}" \
            "$MULTI" >"$log" 2>"$err" &
        PID[$name]=$!
        track "${PID[$name]}" "$name"
        local line
        wait_line "$log" 'admin listening on [0-9.]+:[0-9]+' "${PID[$name]}" "$name" >/dev/null
        line=$(grep -m1 -oE 'http listening on [0-9.]+:[0-9]+' "$log")
        PORT[$name]=${line##*:}
        line=$(grep -m1 -oE 'grpc listening on [0-9.]+:[0-9]+' "$log")
        GPORT[$name]=${line##*:}
        line=$(grep -m1 -oE 'admin listening on [0-9.]+:[0-9]+' "$log")
        APORT[$name]=${line##*:}
    fi
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

# stat PROXY SERVER FIELD: one field of `show stat` (header-based lookup).
hstat() {
    { hap "show stat" 2>/dev/null || true; } | awk -F, -v px="$1" -v sv="$2" -v key="$3" '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) if ($i == key) col = i; next }
        $1 == px && $2 == sv { print $col }'
}
server_status() { hstat be "$1" status; }

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

start_haproxy() { # start_haproxy MODE (http|tcp)
    local mode=$1 try a b
    if [[ $KIND == axum ]]; then
        a="127.0.0.1:${PORT[a]} check"
        b="127.0.0.1:${PORT[b]} check"
    else
        a="127.0.0.1:${GPORT[a]} check port ${APORT[a]}"
        b="127.0.0.1:${GPORT[b]} check port ${APORT[b]}"
    fi
    for try in 1 2 3; do
        FRONT_PORT=$(free_port)
        STATS_PORT=$(free_port)
        cat >"$rundir/haproxy.cfg" <<EOF
global
    maxconn 4096
    stats socket ipv4@127.0.0.1:$STATS_PORT level admin
    stats timeout 5s
    # Only abnormal sessions are logged (dontlog-normal): the failures.
    log stdout format raw local0

defaults
    mode $mode
    log global
    option ${mode}log
    option dontlog-normal
    # Strict: what the client sees is what the instance did.
    retries 0
    no option redispatch
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout check 1s

frontend fe
    bind 127.0.0.1:$FRONT_PORT
    default_backend be

backend be
    balance roundrobin
    option httpchk
    http-check send meth GET uri /ready
    http-check expect status 200
    default-server inter ${INTER_MS}ms fall $FALL rise $RISE
    server a $a
    server b $b
EOF
        haproxy -c -q -f "$rundir/haproxy.cfg" || die "haproxy rejected its configuration ($rundir/haproxy.cfg)"
        haproxy -db -f "$rundir/haproxy.cfg" >"$rundir/haproxy.log" 2>&1 &
        HAP_PID=$!
        track "$HAP_PID" haproxy
        # Generous: on a machine busy with builds the first answer can be slow.
        local deadline=$(( SECONDS + 15 ))
        while (( SECONDS < deadline )) && running "$HAP_PID"; do
            if { hap "show info" 2>/dev/null || true; } | grep -q '^Name: HAProxy'; then
                return 0
            fi
            sleep 0.05
        done
        # What is on the stats port, for the record (seen now and then in a
        # run of the harness, never alone: 0 in 40 starts on 2026-12-04).
        local held
        held=$({ ss -Htan "( sport = :$STATS_PORT or dport = :$STATS_PORT )" 2>&1 || true; } |
            tr -s ' \n' ' ' | cut -c1-400) || true
        wait_pid "$HAP_PID" 1   # it failed (a port taken meanwhile?): try again
        say "haproxy did not start (try $try): $(tail -2 "$rundir/haproxy.log"); on stats port $STATS_PORT: ${held:-nothing}"
    done
    die "haproxy would not start"
}

# ---------------------------------------------------------------- load --
# The loads of the current run: name -> pid, and their result files.
declare -A LOAD_PID=()
LOADS=()

start_loads() { # start_loads DURATION_S
    local d=$1 url=http://127.0.0.1:$FRONT_PORT
    LOAD_PID=()
    if [[ $KIND == axum ]]; then
        LOADS=(fast slow stream)
        local common=(--no-tui -z "${d}s" -w -t "${REQUEST_TIMEOUT_S}s" --worker-threads 1
            --output-format json)
        oha "${common[@]}" -c "$FAST_CONNS" -q "$RATE" -o "$rundir/fast.json" "$url/" \
            >"$rundir/fast.log" 2>&1 &
        LOAD_PID[fast]=$!
        oha "${common[@]}" -c "$SLOW_CONNS" -o "$rundir/slow.json" "$url/slow?ms=$SLOW_MS" \
            >"$rundir/slow.log" 2>&1 &
        LOAD_PID[slow]=$!
        oha "${common[@]}" -c "$STREAM_CONNS" -o "$rundir/stream.json" \
            "$url/stream?chunks=$STREAM_CHUNKS" >"$rundir/stream.log" 2>&1 &
        LOAD_PID[stream]=$!
        EXPECT_CONNS=$(( FAST_CONNS + SLOW_CONNS + STREAM_CONNS ))
    else
        LOADS=(unary stream)
        local load_cmd=("$GRPC_LOAD")
        case $SCENARIO in
            grpcio) load_cmd=(python3 "$here/clients/grpc_load.py") ;;
            grpc-js) load_cmd=(node "$here/clients/grpc_load.js") ;;
            grpc-go) load_cmd=("$GRPC_GO") ;;
        esac
        "${load_cmd[@]}" --addr "127.0.0.1:$FRONT_PORT" --transport "$(transport_of "$SCENARIO")" \
            --connections "$GRPC_CONNS" \
            --duration "${d}s" --unary-interval-ms "$GRPC_UNARY_MS" \
            --stream-count "$GRPC_TICKS" --stream-interval-ms "$GRPC_TICK_MS" \
            --timeout-ms $(( REQUEST_TIMEOUT_S * 1000 )) \
            >"$rundir/grpc.json" 2>"$rundir/grpc.log" &
        LOAD_PID[grpc]=$!
        EXPECT_CONNS=$GRPC_CONNS
    fi
    local l
    for l in "${!LOAD_PID[@]}"; do track "${LOAD_PID[$l]}" "load $l"; done
    # The load is running once HAProxy holds all of its connections.
    local deadline=$(( SECONDS + 10 )) cur=0
    while (( SECONDS < deadline )); do
        cur=$(hstat fe FRONTEND scur)
        (( ${cur:-0} >= EXPECT_CONNS )) && return 0
        for l in "${!LOAD_PID[@]}"; do
            running "${LOAD_PID[$l]}" || die "load $l exited at start: $(tail -3 "$rundir/"*.log | tr '\n' ' ')"
        done
        sleep 0.05
    done
    die "the load did not open its $EXPECT_CONNS connections within 10s (HAProxy has ${cur:-0})"
}

# ---------------------------------------------------------------- results --
# R[col.key]: the figures of one run; col is scenario.variant.run.
declare -A R=()
declare -A KINDS_SEEN=()   # scenario -> newline-separated failure kinds (first-seen order)

add_kind() { # add_kind SCENARIO KIND
    local s=$1 k=$2
    [[ $'\n'${KINDS_SEEN[$s]:-} == *$'\n'"$k"$'\n'* ]] || KINDS_SEEN[$s]+="$k"$'\n'
}

# One load's figures into R and the collect() totals (the caller's locals):
# ok, failed, worst; its failures by kind, as "kind<TAB>count" lines on stdin.
record_load() {
    local col=$1 l=$2 kind n
    R[$col.$l.ok]=$3
    R[$col.$l.failed]=$4
    R[$col.$l.worst]=$5
    total_ok=$(( total_ok + $3 ))
    total_failed=$(( total_failed + $4 ))
    (( $5 > worst_all )) && worst_all=$5
    while IFS=$'\t' read -r kind n; do
        [[ -n $kind ]] || continue
        add_kind "$SCENARIO" "$l: $kind"
        R[$col.kind.$l: $kind]=$n
    done
    return 0
}

# collect COL: reads the load results into R.
collect() {
    local col=$1 l f ok failed worst n total_ok=0 total_failed=0 worst_all=0
    if [[ $KIND == axum ]]; then
        for l in "${LOADS[@]}"; do
            f=$rundir/$l.json
            jq -e . "$f" >/dev/null 2>&1 || die "load $l wrote no JSON result: $(tail -3 "$rundir/$l.log" | tr '\n' ' ')"
            ok=$(jq -r '.statusCodeDistribution["200"] // 0' "$f")
            failed=$(jq -r '([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
                            + ([.errorDistribution | to_entries[] | .value] | add // 0)' "$f")
            worst=$(jq -r '.metrics.latency_ms.max // 0 | floor' "$f")
            record_load "$col" "$l" "$ok" "$failed" "$worst" < <(jq -r '(.statusCodeDistribution | to_entries[] | select(.key != "200") | "HTTP \(.key)\t\(.value)"),
                            (.errorDistribution | to_entries[] | "\(.key)\t\(.value)")' "$f")
        done
    else
        f=$rundir/grpc.json
        jq -e . "$f" >/dev/null 2>&1 || die "grpc_load wrote no JSON result: $(tail -3 "$rundir/grpc.log" | tr '\n' ' ')"
        for l in "${LOADS[@]}"; do
            ok=$(jq -r ".$l.ok" "$f")
            failed=$(jq -r ".$l.failed" "$f")
            worst=$(jq -r ".$l.max_ms | floor" "$f")
            record_load "$col" "$l" "$ok" "$failed" "$worst" < <(jq -r ".$l.outcomes | to_entries[] | select(.key | startswith(\"ok\") | not) | \"\(.key)\t\(.value)\"" "$f")
            n=$(jq -r ".$l.outcomes[\"ok, ended early by shutdown\"] // 0" "$f")
            R[$col.$l.early]=$n
        done
    fi
    R[$col.ok]=$total_ok
    R[$col.failed]=$total_failed
    R[$col.worst]=$worst_all
}

# report_of FILE: "completed/rejected" from a shutdown report on stdout, or -.
report_of() {
    local line
    line=$(grep -m1 -oE '[0-9]+ requests completed, [0-9]+ rejected' "$1" 2>/dev/null || true)
    if [[ -n $line ]]; then
        line=${line/ requests completed, /\/}
        echo "${line% rejected}"
    else
        echo -
    fi
}

# ----------------------------------------------------------------- a run --
# roll NAME: SIGTERM, (watch HAProxy mark it DOWN,) wait for the exit,
# restart on the same port(s), wait until HAProxy has it UP.
roll() {
    local name=$1 pid t0 down=- s
    pid=${PID[$name]}
    t0=$(now)
    kill -TERM "$pid"
    # While it shuts down: when does HAProxy stop sending it new work? (Only
    # watched until it is DOWN or the process is gone: bounded either way.)
    local deadline=$(( SECONDS + EXIT_LIMIT_S ))
    while (( SECONDS < deadline )) && running "$pid"; do
        s=$(server_status "$name")
        if [[ $s == DOWN* ]]; then
            down=$(elapsed "$t0" "$(now)")
            break
        fi
        sleep 0.05
    done
    wait_pid "$pid" "$EXIT_LIMIT_S"
    R[$COL.$name.rc]=$WAIT_RC
    R[$COL.$name.exit]=$(elapsed "$t0" "$(now)")
    R[$COL.$name.down]=$down
    start_instance "$name"
    if wait_up "$name"; then :; fi
    R[$COL.$name.up]=$UP_AFTER
    # What the instance itself said about its shutdown (best effort: the
    # report's wording is the library's).
    R[$COL.$name.report]=$(report_of "$rundir/$name.$(( ${STARTS[$name]} - 1 )).out")
    local seen=${down}s
    [[ $down == - ]] && seen="not seen (gone first)"
    say "  $name: DOWN in haproxy: $seen; exited after ${R[$COL.$name.exit]}s (status $WAIT_RC); UP again ${UP_AFTER}s after restart"
}

run_one() { # run_one SCENARIO VARIANT RUN
    SCENARIO=$1 VARIANT=$2
    local run=$3 mode load_s l
    COL=$SCENARIO.$VARIANT.$run
    rundir=$work/$COL
    mkdir -p "$rundir"
    is_grpc "$SCENARIO" && KIND=multi || KIND=axum
    [[ $SCENARIO == l7 ]] && mode=http || mode=tcp
    # The load is stopped (by signal) TAIL seconds after B is back UP; its
    # own limit is only a backstop, long enough for two restarts that each
    # use their whole kill limit.
    load_s=$(( WARMUP_S + 2 * (EXIT_LIMIT_S + UP_LIMIT_S) + TAIL_S + 10 ))
    PID=() PORT=() GPORT=() APORT=() STARTS=()

    say "$SCENARIO/$VARIANT run $run: starting A and B ($KIND), haproxy mode $mode"
    start_instance a
    start_instance b
    start_haproxy "$mode"
    wait_up a || die "a never UP in haproxy"
    wait_up b || die "b never UP in haproxy"
    start_loads "$load_s"
    local t_load
    t_load=$(now)
    sleep "$WARMUP_S"   # steady load before the first restart (a load phase, not a wait)

    roll a
    roll b
    R[$COL.roll]=$(elapsed "$t_load" "$(now)")
    sleep "$TAIL_S"     # steady load on the restarted pair (a load phase, not a wait)

    # The loads must still be running (else part of the restart went
    # unmeasured); then they are told to stop: no new request, the ones in
    # flight run to their end (oha -w; grpc_load on SIGTERM). The fast oha
    # (-q) prints at once and leaves its last in-flight requests (a few ms of
    # traffic on the healthy pair) uncounted either way.
    R[$COL.window]=ok
    for l in "${!LOAD_PID[@]}"; do
        running "${LOAD_PID[$l]}" || R[$COL.window]=short
    done
    for l in "${!LOAD_PID[@]}"; do
        if [[ $l == grpc ]]; then
            kill -TERM "${LOAD_PID[$l]}" 2>/dev/null || true
        else
            kill -INT "${LOAD_PID[$l]}" 2>/dev/null || true
        fi
    done
    for l in "${!LOAD_PID[@]}"; do
        wait_pid "${LOAD_PID[$l]}" $(( REQUEST_TIMEOUT_S + 10 ))
        (( WAIT_RC == 0 )) || die "load $l failed (status $WAIT_RC): $(tail -3 "$rundir/"*.log | tr '\n' ' ')"
    done
    R[$COL.retries]="$(hstat be BACKEND wretr)/$(hstat be BACKEND wredis)"
    R[$COL.econ]=$(hstat be BACKEND econ)
    R[$COL.eresp]=$(hstat be BACKEND eresp)
    R[$COL.logged]=$(grep -c . "$rundir/haproxy.log" || true)

    # Tear down: HAProxy first (it holds no more client connections), then
    # both instances at once.
    kill -TERM "$HAP_PID" 2>/dev/null || true
    wait_pid "$HAP_PID" 5
    kill -TERM "${PID[a]}" "${PID[b]}" 2>/dev/null || true
    wait_pid "${PID[a]}" "$EXIT_LIMIT_S"
    wait_pid "${PID[b]}" "$EXIT_LIMIT_S"

    collect "$COL"
    [[ ${R[$COL.window]} == ok ]] ||
        die "the load ended before the restart did (${R[$COL.roll]}s after it started; its limit ${load_s}s)"
    (( ${R[$COL.ok]} > 0 )) || die "no request succeeded at all: the load did not run"

    local result
    local clean=0
    [[ ${R[$COL.a.rc]} == 0 && ${R[$COL.b.rc]} == 0 && ${R[$COL.a.up]} != never &&
        ${R[$COL.b.up]} != never ]] && clean=1
    if [[ $VARIANT == ours ]] && reported_only "$SCENARIO"; then
        # Measured and reported, not a gate (see reported_only and the
        # header): under a bare `Channel`, hyper's HTTP/2 client still loses
        # the odd call to the GOAWAY, unsent (hyper#2500; the retry below it
        # is judged, grpc-channel-retry). The instances must still exit
        # cleanly.
        if (( clean == 1 )); then
            result=reported
        else
            result=FAIL
            STATUS=1
        fi
    elif [[ $VARIANT == ours ]]; then
        if (( ${R[$COL.failed]} == 0 && clean == 1 )); then
            result=pass
        else
            result=FAIL
            STATUS=1
        fi
    else
        result=reported
    fi
    R[$COL.result]=$result
    say "$SCENARIO/$VARIANT run $run: ok=${R[$COL.ok]} failed=${R[$COL.failed]} worst=${R[$COL.worst]}ms -> $result"
    COLS[$SCENARIO]+="$COL "
}

# --------------------------------------------------------------- output --
declare -A COLS=()   # scenario -> its columns (scenario.variant.run)

title() {
    case $1 in
        l7) echo "L7: HAProxy mode http, two axum instances, HTTP/1.1 keep-alive clients" ;;
        l4) echo "L4: HAProxy mode tcp, two axum instances, HTTP/1.1 keep-alive clients" ;;
        grpc) echo "L4 gRPC: HAProxy mode tcp, two multi instances (gRPC port), tonic clients on hyper-util's pool, HTTP/2" ;;
        grpc-channel) echo "L4 gRPC: HAProxy mode tcp, two multi instances (gRPC port), tonic clients on tonic's Channel, HTTP/2" ;;
        grpc-channel-retry) echo "L4 gRPC: HAProxy mode tcp, two multi instances (gRPC port), tonic clients on tonic's Channel below tower_graceful::client::TransparentRetry, HTTP/2" ;;
        grpcio) echo "L4 gRPC: HAProxy mode tcp, two multi instances (gRPC port), grpcio (Python, gRPC C-core) clients, default settings, HTTP/2" ;;
        grpc-js) echo "L4 gRPC: HAProxy mode tcp, two multi instances (gRPC port), @grpc/grpc-js (Node) clients, default settings, HTTP/2" ;;
        grpc-go) echo "L4 gRPC: HAProxy mode tcp, two multi instances (gRPC port), grpc-go clients (one ClientConn each), default settings, HTTP/2" ;;
    esac
}

print_table() { # print_table SCENARIO
    local s=$1 col cols kinds=() k w=44 line l
    read -r -a cols <<<"${COLS[$s]}"
    while IFS= read -r k; do [[ -n $k ]] && kinds+=("$k"); done <<<"${KINDS_SEEN[$s]:-}"
    for k in "${kinds[@]}"; do (( ${#k} + 4 > w )) && w=$(( ${#k} + 4 )); done
    row() { # row LABEL KEY
        line=$(printf "%-${w}s" "$1")
        for col in "${cols[@]}"; do line+=$(printf ' %14s' "${R[$col.$2]:--}"); done
        echo "$line"
    }
    echo
    echo "== $(title "$s")"
    echo "   HAProxy: check GET /ready every ${INTER_MS}ms, fall $FALL, rise $RISE, retries 0, no redispatch"
    if is_grpc "$s"; then
        echo "   load: $GRPC_CONNS connections, each: unary Hello every ${GRPC_UNARY_MS}ms + Count streams ($GRPC_TICKS ticks, ${GRPC_TICK_MS}ms apart) back to back"
    else
        echo "   load: fast GET / on $FAST_CONNS connections at $RATE/s; slow GET /slow?ms=$SLOW_MS on $SLOW_CONNS; stream GET /stream?chunks=$STREAM_CHUNKS on $STREAM_CONNS"
    fi
    if is_grpc "$s"; then
        echo "   ours: pre-drain $PRE_DRAIN, deadline $DEADLINE"
    else
        echo "   ours: pre-drain $pre_drain_shown, deadline $DEADLINE; builtin: GRACEFUL_MODE=builtin"
    fi
    line=$(printf "%-${w}s" "")
    for col in "${cols[@]}"; do
        local v=${col#*.}
        line+=$(printf ' %14s' "${v%.*} #${v##*.}")
    done
    echo "$line"
    row "requests ok" ok
    row "requests failed" failed
    for l in $( is_grpc "$s" && echo "unary stream" || echo "fast slow stream" ); do
        row "  $l: ok" "$l.ok"
        row "  $l: failed" "$l.failed"
    done
    if is_grpc "$s"; then row "  stream: ok, ended early by shutdown" stream.early; fi
    if ((${#kinds[@]})); then
        echo "failures by kind"
        for k in "${kinds[@]}"; do row "  $k" "kind.$k"; done
    else
        echo "failures by kind: none"
    fi
    for l in $( is_grpc "$s" && echo "unary stream" || echo "fast slow stream" ); do
        row "worst latency, $l (ms)" "$l.worst"
    done
    for n in a b; do
        local N=${n^^}
        row "$N: DOWN in haproxy after SIGTERM (s)" "$n.down"
        row "$N: exit after SIGTERM (s)" "$n.exit"
        row "$N: exit status" "$n.rc"
        row "$N: UP again after restart (s)" "$n.up"
        row "$N: report: completed/rejected in drain" "$n.report"
    done
    row "load start to both restarted (s)" roll
    row "haproxy retries/redispatches" retries
    row "haproxy backend connect errors" econ
    row "haproxy backend response errors" eresp
    row "result" result
}

machine_lines() { # machine_lines SCENARIO
    local s=$1 col cols v variant run k n failures
    read -r -a cols <<<"${COLS[$s]}"
    for col in "${cols[@]}"; do
        v=${col#*.}
        variant=${v%.*} run=${v##*.}
        failures=""
        while IFS= read -r k; do
            [[ -n $k ]] || continue
            n=${R[$col.kind.$k]:-}
            [[ -n $n ]] && failures+="${failures:+,}${k// /_}:$n"
        done <<<"${KINDS_SEEN[$s]:-}"
        local loads="" l
        for l in $( is_grpc "$s" && echo "unary stream" || echo "fast slow stream" ); do
            loads+=" ${l}_ok=${R[$col.$l.ok]} ${l}_failed=${R[$col.$l.failed]} ${l}_worst_ms=${R[$col.$l.worst]}"
        done
        echo "ROLLING scenario=$s variant=$variant run=$run ok=${R[$col.ok]} failed=${R[$col.failed]} worst_ms=${R[$col.worst]}$loads a_down_s=${R[$col.a.down]} a_exit_s=${R[$col.a.exit]} a_rc=${R[$col.a.rc]} a_up_s=${R[$col.a.up]} b_down_s=${R[$col.b.down]} b_exit_s=${R[$col.b.exit]} b_rc=${R[$col.b.rc]} b_up_s=${R[$col.b.up]} result=${R[$col.result]} failures=${failures:-none}"
    done
    for variant in $(variants_of "$s"); do
        local ok=0 failed=0 bad=0 runs=0 result
        for col in "${cols[@]}"; do
            [[ $col == "$s.$variant."* ]] || continue
            runs=$(( runs + 1 ))
            ok=$(( ok + ${R[$col.ok]} ))
            failed=$(( failed + ${R[$col.failed]} ))
            [[ ${R[$col.result]} == FAIL || ${R[$col.failed]} != 0 ]] && bad=$(( bad + 1 ))
        done
        if [[ $variant == ours ]] && reported_only "$s"; then
            result=reported
        elif [[ $variant == ours ]]; then
            (( bad == 0 )) && result=pass || result=FAIL
        else
            result=reported
        fi
        echo "ROLLING scenario=$s variant=$variant run=all runs=$runs ok=$ok failed=$failed failed_runs=$bad result=$result"
    done
}

# ----------------------------------------------------------------- main --
STATUS=0
for s in "${scenarios[@]}"; do
    for run in $(seq 1 "$RUNS"); do
        for v in $(variants_of "$s"); do
            run_one "$s" "$v" "$run"
        done
    done
    print_table "$s"
done
echo
for s in "${scenarios[@]}"; do
    [[ -n ${COLS[$s]:-} ]] && machine_lines "$s"
done
say "done in $(( SECONDS - started_at ))s (without the build)"
if (( STATUS == 0 )); then
    if [[ ${ROLLING_GRPC_STRICT:-0} == 1 ]]; then
        echo "rolling: PASS (every ours run lost nothing; instances exited cleanly and came back UP)"
    else
        echo "rolling: PASS (every judged ours run lost nothing, grpc-channel reported above; instances exited cleanly and came back UP)"
    fi
else
    echo "rolling: FAIL (an ours run lost requests, or an instance did not exit cleanly or come back UP)"
fi
exit "$STATUS"
