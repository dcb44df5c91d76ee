#!/usr/bin/env python3
"""gRPC load for the rolling-restart harness (tests/rolling/run.sh) on
grpcio, the Python binding of gRPC C-core, with its default settings: the
same calls, flags and JSON result as tests/src/bin/grpc_load.rs (a Rust
tonic client), so the harness reads both alike.

    grpc_load.py --addr 127.0.0.1:PORT [--connections 8] [--duration 60s]
                 [--unary-interval-ms 25] [--stream-count 5]
                 [--stream-interval-ms 200] [--timeout-ms 10000]
                 [--stop-on-shutdown] [--transport IGNORED]

Each connection is its own channel (`grpc.use_local_subchannel_pool`, so
C-core does not share one subchannel between them; nothing else is set).
On each, unary Hello every --unary-interval-ms and server-streaming Count
back to back. The messages of examples/proto/demo.proto are encoded by hand
(a few varints and one string), so only the `grpcio` package is needed.
Failed calls get a line on stderr, with their connection and wall-clock
start and end. Exit status 0 when the load ran, 2 for bad arguments or when
a connection could not be made.
"""

import argparse
import json
import math
import signal
import sys
import threading
import time

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields(data):
    """(field number, value) pairs of a protobuf message of varints and
    length-delimited fields."""
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            n, i = read_varint(data, i)
            value, i = data[i:i + n], i + n
        else:
            raise ValueError(f"unexpected wire type {wire}")
        yield num, value


def read_varint(data, i):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def hello_request(name):
    raw = name.encode()
    return b"\x0a" + varint(len(raw)) + raw


def hello_reply(data):
    message = ""
    for num, value in fields(data):
        if num == 1:
            message = value.decode()
    return message


def count_request(count, interval_ms, stop_on_shutdown):
    out = b""
    if count:
        out += b"\x08" + varint(count)
    if interval_ms:
        out += b"\x10" + varint(interval_ms)
    if stop_on_shutdown:
        out += b"\x18\x01"
    return out


def tick(data):
    seq, shutting_down = 0, False
    for num, value in fields(data):
        if num == 1:
            seq = value
        elif num == 2:
            shutting_down = bool(value)
    return seq, shutting_down


def ident(b):
    return b


def duration(text):
    if text.endswith("ms"):
        return int(text[:-2]) / 1000.0
    if text.endswith("s"):
        return float(text[:-1])
    raise argparse.ArgumentTypeError(f"cannot read the duration {text!r} (use 60s or 1500ms)")


def wall_clock():
    return f"{time.time():.6f}"


def status_kind(err):
    return f"{err.code().name}: {err.details()}"


class OpStats:
    def __init__(self):
        self.outcomes = {}
        self.latencies_ms = []
        self.ok = 0
        self.failed = 0

    def record(self, ok, kind, took_s):
        self.latencies_ms.append(took_s * 1000.0)
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self.outcomes[kind] = self.outcomes.get(kind, 0) + 1

    def json(self):
        lat = sorted(self.latencies_ms)
        n = len(lat)

        def pick(q):
            if n == 0:
                return 0.0
            i = min(max(math.ceil(n * q), 1), n) - 1
            return round(lat[i], 1)

        return {
            "calls": self.ok + self.failed,
            "ok": self.ok,
            "failed": self.failed,
            "p50_ms": pick(0.50),
            "p99_ms": pick(0.99),
            "max_ms": pick(1.0),
            "outcomes": dict(sorted(self.outcomes.items())),
        }


def main():
    p = argparse.ArgumentParser(description="gRPC load on grpcio (C-core)")
    p.add_argument("--addr", required=True)
    p.add_argument("--transport", default="grpcio")  # accepted, not used
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--duration", type=duration, default=60.0)
    p.add_argument("--unary-interval-ms", type=int, default=25)
    p.add_argument("--stream-count", type=int, default=5)
    p.add_argument("--stream-interval-ms", type=int, default=200)
    p.add_argument("--timeout-ms", type=int, default=10000)
    p.add_argument("--stop-on-shutdown", action="store_true")
    try:
        args = p.parse_args()
    except SystemExit:
        sys.exit(2)
    if args.connections < 1:
        print("grpc_load.py: --connections must be at least 1", file=sys.stderr)
        sys.exit(2)
    timeout = args.timeout_ms / 1000.0

    channels = []
    for i in range(args.connections):
        ch = grpc.insecure_channel(args.addr, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            grpc.channel_ready_future(ch).result(timeout=5)
        except grpc.FutureTimeoutError:
            print(f"grpc_load.py: connection {i} to {args.addr} timed out", file=sys.stderr)
            sys.exit(2)
        channels.append(ch)
    print(f"grpc_load: {len(channels)} connections established", file=sys.stderr, flush=True)

    stop = threading.Event()
    why = ["duration over"]

    def on_signal(signum, _frame):
        why[0] = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    lock = threading.Lock()
    stats = {"unary": OpStats(), "stream": OpStats()}

    def unary(ch):
        call = ch.unary_unary("/demo.v1.Demo/Hello", request_serializer=ident,
                              response_deserializer=ident)
        try:
            reply = hello_reply(call(hello_request("rolling"), timeout=timeout))
        except grpc.RpcError as e:
            return False, status_kind(e)
        if reply == "hello, rolling":
            return True, "ok"
        return False, f"wrong reply {reply!r}"

    def stream(ch):
        call = ch.unary_stream("/demo.v1.Demo/Count", request_serializer=ident,
                               response_deserializer=ident)
        got = 0
        ended_early = False
        try:
            for msg in call(count_request(args.stream_count, args.stream_interval_ms,
                                          args.stop_on_shutdown), timeout=timeout):
                if ended_early:
                    return False, "a tick after the shutting_down tick"
                seq, shutting_down = tick(msg)
                got += 1
                if seq != got:
                    return False, f"tick {seq} where {got} was expected"
                if shutting_down:
                    ended_early = True
        except grpc.RpcError as e:
            if got == 0:
                return False, status_kind(e)
            return False, f"after {got} ticks: {status_kind(e)}"
        if ended_early:
            return True, "ok, ended early by shutdown"
        if got == args.stream_count:
            return True, "ok"
        return False, f"ended cleanly after {got} of {args.stream_count} ticks"

    def loop(name, conn, op, ch, pause, offset):
        if offset and stop.wait(offset):
            return
        while not stop.is_set():
            started, started_at = time.monotonic(), wall_clock()
            ok, kind = op(ch)
            took = time.monotonic() - started
            if not ok:
                print(f"grpc_load: failed {name} on connection {conn}: started {started_at}, "
                      f"failed {wall_clock()} ({int(took * 1000)} ms): {kind}",
                      file=sys.stderr, flush=True)
            with lock:
                stats[name].record(ok, kind, took)
            if pause:
                stop.wait(pause)

    t0 = time.monotonic()
    threads = []
    pause = args.unary_interval_ms / 1000.0
    for i, ch in enumerate(channels):
        offset = pause * i / args.connections
        threads.append(threading.Thread(target=loop, args=("unary", i, unary, ch, pause, offset),
                                        daemon=True))
        threads.append(threading.Thread(target=loop, args=("stream", i, stream, ch, 0, 0),
                                        daemon=True))
    for t in threads:
        t.start()
    stop.wait(args.duration)
    stop.set()
    print(f"grpc_load: stopping ({why[0]}) after {time.monotonic() - t0:.1f}s; "
          "waiting for calls in flight", file=sys.stderr, flush=True)
    # Every call is bounded by the timeout, so this ends; bounded anyway.
    limit = time.monotonic() + timeout + 5
    for t in threads:
        t.join(max(0.0, limit - time.monotonic()))
    if any(t.is_alive() for t in threads):
        print("grpc_load: calls still in flight after the timeout; reporting without them",
              file=sys.stderr)
    elapsed = time.monotonic() - t0

    with lock:
        u, s = stats["unary"], stats["stream"]
        failures = {}
        for op, st in (("unary", u), ("stream", s)):
            for kind, n in st.outcomes.items():
                if not kind.startswith("ok"):
                    failures[f"{op}: {kind}"] = failures.get(f"{op}: {kind}", 0) + n
        summary = {
            "addr": args.addr,
            "connections": args.connections,
            "elapsed_s": round(elapsed, 2),
            "stopped_by": why[0],
            "calls": u.ok + u.failed + s.ok + s.failed,
            "ok": u.ok + s.ok,
            "failed": u.failed + s.failed,
            "failures": dict(sorted(failures.items())),
            "unary": u.json(),
            "stream": s.json(),
        }
    print(json.dumps(summary), flush=True)
    for ch in channels:
        ch.close()


if __name__ == "__main__":
    main()
