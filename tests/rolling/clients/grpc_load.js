#!/usr/bin/env node
// gRPC load for the rolling-restart harness (tests/rolling/run.sh) on
// @grpc/grpc-js (Node), with its default settings (its transparent retry
// included): the same calls, flags and JSON result as
// tests/src/bin/grpc_load.rs (a Rust tonic client), so the harness reads
// both alike.
//
//   grpc_load.js --addr 127.0.0.1:PORT [--connections 8] [--duration 60s]
//                [--unary-interval-ms 25] [--stream-count 5]
//                [--stream-interval-ms 200] [--timeout-ms 10000]
//                [--stop-on-shutdown] [--transport IGNORED]
//
// Each connection is its own client with its own channel
// (`grpc.use_local_subchannel_pool`, so grpc-js does not share one
// subchannel between them; nothing else is set). On each, unary Hello every
// --unary-interval-ms and server-streaming Count back to back. The messages
// of examples/proto/demo.proto are encoded by hand, so only @grpc/grpc-js is
// needed (found through NODE_PATH). Failed calls get a line on stderr, with
// their connection and wall-clock start and end. Exit status 0 when the load
// ran, 2 for bad arguments or when a connection could not be made.
'use strict';

const grpc = require('@grpc/grpc-js');

function usage(msg) {
  process.stderr.write(`grpc_load.js: ${msg}\n`);
  process.exit(2);
}

function parseDuration(text) {
  let m;
  if ((m = /^(\d+)ms$/.exec(text))) return Number(m[1]);
  if ((m = /^(\d+(?:\.\d+)?)s$/.exec(text))) return Number(m[1]) * 1000;
  usage(`cannot read the duration ${JSON.stringify(text)} (use 60s or 1500ms)`);
}

function parseArgs(argv) {
  const a = {
    addr: null, connections: 8, durationMs: 60000, unaryIntervalMs: 25,
    streamCount: 5, streamIntervalMs: 200, timeoutMs: 10000, stopOnShutdown: false,
  };
  const num = (flag, v) => {
    if (!/^\d+$/.test(v || '')) usage(`${flag}: ${JSON.stringify(v)} is not a whole number`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--stop-on-shutdown') { a.stopOnShutdown = true; continue; }
    const v = argv[++i];
    if (v === undefined) usage(`${flag} needs a value`);
    switch (flag) {
      case '--addr': a.addr = v; break;
      case '--transport': break; // accepted, not used
      case '--connections': a.connections = num(flag, v); break;
      case '--duration': a.durationMs = parseDuration(v); break;
      case '--unary-interval-ms': a.unaryIntervalMs = num(flag, v); break;
      case '--stream-count': a.streamCount = num(flag, v); break;
      case '--stream-interval-ms': a.streamIntervalMs = num(flag, v); break;
      case '--timeout-ms': a.timeoutMs = num(flag, v); break;
      default: usage(`unknown flag ${flag}`);
    }
  }
  if (!a.addr) usage('--addr is needed');
  if (a.connections < 1) usage('--connections must be at least 1');
  return a;
}

// ---- protobuf, by hand: varints and length-delimited fields only.
function varint(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}
function* fields(buf) {
  let i = 0;
  const read = () => {
    let shift = 0, value = 0, b;
    do {
      b = buf[i++];
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    return value;
  };
  while (i < buf.length) {
    const key = read();
    const num = Math.floor(key / 8), wire = key & 7;
    if (wire === 0) yield [num, read()];
    else if (wire === 2) { const n = read(); yield [num, buf.subarray(i, i + n)]; i += n; }
    else throw new Error(`unexpected wire type ${wire}`);
  }
}
const helloRequest = (name) => {
  const raw = Buffer.from(name);
  return Buffer.from([0x0a, ...varint(raw.length), ...raw]);
};
const helloReply = (buf) => {
  let message = '';
  for (const [num, v] of fields(buf)) if (num === 1) message = Buffer.from(v).toString();
  return message;
};
const countRequest = (count, intervalMs, stop) => Buffer.from([
  ...(count ? [0x08, ...varint(count)] : []),
  ...(intervalMs ? [0x10, ...varint(intervalMs)] : []),
  ...(stop ? [0x18, 1] : []),
]);
const tick = (buf) => {
  let seq = 0, shuttingDown = false;
  for (const [num, v] of fields(buf)) {
    if (num === 1) seq = v;
    else if (num === 2) shuttingDown = v !== 0;
  }
  return { seq, shuttingDown };
};
const ident = (b) => b;

const wallClock = () => (Date.now() / 1000).toFixed(6);
const statusKind = (e) => `${grpc.status[e.code] ?? e.code}: ${e.details}`;

class OpStats {
  constructor() { this.outcomes = {}; this.latencies = []; this.ok = 0; this.failed = 0; }
  record(ok, kind, tookMs) {
    this.latencies.push(tookMs);
    if (ok) this.ok++; else this.failed++;
    this.outcomes[kind] = (this.outcomes[kind] || 0) + 1;
  }
  json() {
    const lat = [...this.latencies].sort((x, y) => x - y);
    const n = lat.length;
    const pick = (q) => n === 0 ? 0 : Math.round(lat[Math.min(Math.max(Math.ceil(n * q), 1), n) - 1] * 10) / 10;
    const outcomes = {};
    for (const k of Object.keys(this.outcomes).sort()) outcomes[k] = this.outcomes[k];
    return {
      calls: this.ok + this.failed, ok: this.ok, failed: this.failed,
      p50_ms: pick(0.5), p99_ms: pick(0.99), max_ms: pick(1), outcomes,
    };
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const clients = [];
  for (let i = 0; i < args.connections; i++) {
    const c = new grpc.Client(args.addr, grpc.credentials.createInsecure(),
      { 'grpc.use_local_subchannel_pool': 1 });
    await new Promise((resolve) => c.waitForReady(Date.now() + 5000, (err) => {
      if (err) usage(`connection ${i} to ${args.addr} failed: ${err.message}`);
      resolve();
    }));
    clients.push(c);
  }
  process.stderr.write(`grpc_load: ${clients.length} connections established\n`);

  let stopped = false, why = 'duration over', wake = [];
  const stop = (reason) => {
    if (stopped) return;
    stopped = true; why = reason;
    for (const w of wake) w();
    wake = [];
  };
  // A pause that ends early when the load stops.
  const pause = (ms) => new Promise((resolve) => {
    if (stopped) return resolve();
    const t = setTimeout(done, ms);
    function done() { clearTimeout(t); resolve(); }
    wake.push(done);
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  const stats = { unary: new OpStats(), stream: new OpStats() };

  const unary = (c) => new Promise((resolve) => {
    c.makeUnaryRequest('/demo.v1.Demo/Hello', ident, ident, helloRequest('rolling'),
      new grpc.Metadata(), { deadline: Date.now() + args.timeoutMs }, (err, reply) => {
        if (err) return resolve([false, statusKind(err)]);
        const m = helloReply(reply);
        resolve(m === 'hello, rolling' ? [true, 'ok'] : [false, `wrong reply ${JSON.stringify(m)}`]);
      });
  });
  const stream = (c) => new Promise((resolve) => {
    const call = c.makeServerStreamRequest('/demo.v1.Demo/Count', ident, ident,
      countRequest(args.streamCount, args.streamIntervalMs, args.stopOnShutdown),
      new grpc.Metadata(), { deadline: Date.now() + args.timeoutMs });
    let got = 0, endedEarly = false, verdict = null;
    call.on('data', (msg) => {
      if (verdict) return;
      if (endedEarly) { verdict = [false, 'a tick after the shutting_down tick']; return; }
      const t = tick(msg);
      got++;
      if (t.seq !== got) verdict = [false, `tick ${t.seq} where ${got} was expected`];
      else if (t.shuttingDown) endedEarly = true;
    });
    call.on('error', (e) => {
      if (!verdict) verdict = [false, got === 0 ? statusKind(e) : `after ${got} ticks: ${statusKind(e)}`];
    });
    call.on('status', (s) => {
      // 'status' comes last, after 'error' for a failed call.
      if (verdict) return resolve(verdict);
      if (s.code !== grpc.status.OK) return resolve([false, statusKind(s)]);
      if (endedEarly) return resolve([true, 'ok, ended early by shutdown']);
      if (got === args.streamCount) return resolve([true, 'ok']);
      resolve([false, `ended cleanly after ${got} of ${args.streamCount} ticks`]);
    });
  });

  async function loop(name, conn, op, c, pauseMs, offsetMs) {
    if (offsetMs) await pause(offsetMs);
    while (!stopped) {
      const t0 = performance.now(), startedAt = wallClock();
      const [ok, kind] = await op(c);
      const took = performance.now() - t0;
      if (!ok) {
        process.stderr.write(`grpc_load: failed ${name} on connection ${conn}: started ${startedAt}, failed ${wallClock()} (${Math.floor(took)} ms): ${kind}\n`);
      }
      stats[name].record(ok, kind, took);
      if (pauseMs) await pause(pauseMs);
    }
  }

  const t0 = performance.now();
  const loops = [];
  clients.forEach((c, i) => {
    loops.push(loop('unary', i, unary, c, args.unaryIntervalMs, args.unaryIntervalMs * i / args.connections));
    loops.push(loop('stream', i, stream, c, 0, 0));
  });
  const timer = setTimeout(() => stop('duration over'), args.durationMs);
  await new Promise((resolve) => { if (stopped) resolve(); else wake.push(resolve); });
  clearTimeout(timer);
  process.stderr.write(`grpc_load: stopping (${why}) after ${((performance.now() - t0) / 1000).toFixed(1)}s; waiting for calls in flight\n`);
  // Every call is bounded by its deadline, so this ends; bounded anyway.
  let limit;
  const all = await Promise.race([
    Promise.all(loops).then(() => true),
    new Promise((resolve) => { limit = setTimeout(() => resolve(false), args.timeoutMs + 5000); }),
  ]);
  clearTimeout(limit);
  if (!all) process.stderr.write('grpc_load: calls still in flight after the timeout; reporting without them\n');
  const elapsed = (performance.now() - t0) / 1000;
  const u = stats.unary, s = stats.stream;
  const failures = {};
  for (const [op, st] of [['unary', u], ['stream', s]]) {
    for (const [kind, n] of Object.entries(st.outcomes)) {
      if (!kind.startsWith('ok')) failures[`${op}: ${kind}`] = (failures[`${op}: ${kind}`] || 0) + n;
    }
  }
  const sorted = {};
  for (const k of Object.keys(failures).sort()) sorted[k] = failures[k];
  process.stdout.write(JSON.stringify({
    addr: args.addr, connections: args.connections, elapsed_s: Math.round(elapsed * 100) / 100,
    stopped_by: why, calls: u.ok + u.failed + s.ok + s.failed, ok: u.ok + s.ok,
    failed: u.failed + s.failed, failures: sorted, unary: u.json(), stream: s.json(),
  }) + '\n');
  for (const c of clients) c.close();
  process.exit(0);
}

main().catch((e) => usage(e.stack || String(e)));
