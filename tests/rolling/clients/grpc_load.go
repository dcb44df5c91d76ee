// gRPC load for the rolling-restart harness (tests/rolling/run.sh) on
// grpc-go, with its default settings (its transparent retry of a stream
// that never reached a server included): the same calls, flags and JSON
// result as tests/src/bin/grpc_load.rs (a Rust tonic client), so the harness
// reads both alike.
//
//	grpc_load --addr 127.0.0.1:PORT [--connections 8] [--duration 60s]
//	          [--unary-interval-ms 25] [--stream-count 5]
//	          [--stream-interval-ms 200] [--timeout-ms 10000]
//	          [--stop-on-shutdown] [--transport IGNORED]
//
// Each connection is its own grpc.ClientConn (grpc.Dial with WithInsecure
// and nothing else: no service config, no retry policy, no WithBlock; each
// ClientConn has its own HTTP/2 connection). The load starts once all are
// READY (at most 5 s each). On each, unary Hello every --unary-interval-ms
// and server-streaming Count back to back. The messages of
// examples/proto/demo.proto are encoded by hand (a few varints and one
// string) and go through a pass-through codec (grpc.ForceCodec on []byte),
// so only grpc-go itself is needed: no protoc, no generated code. Failed
// calls get a line on stderr, with their connection and wall-clock start and
// end. grpc-go's own log: GRPC_GO_LOG_SEVERITY_LEVEL=info
// GRPC_GO_LOG_VERBOSITY_LEVEL=99 (stderr). Exit status 0 when the load ran,
// 2 for bad arguments or when a connection could not be made.
//
// Built by run.sh in GOPATH mode against Debian's golang-google-grpc-dev
// (grpc-go 1.33), offline:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
//	    go build -o grpc_load tests/rolling/clients/grpc_load.go
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// ---- protobuf, by hand: varints and length-delimited fields only.

func varint(n uint64) []byte {
	var out []byte
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n != 0 {
			out = append(out, b|0x80)
		} else {
			return append(out, b)
		}
	}
}

type field struct {
	num   uint64
	value uint64 // wire type 0
	bytes []byte // wire type 2
}

func readVarint(data []byte, i int) (uint64, int, error) {
	var value uint64
	for shift := uint(0); ; shift += 7 {
		if i >= len(data) || shift > 63 {
			return 0, i, errors.New("truncated varint")
		}
		b := data[i]
		i++
		value |= uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return value, i, nil
		}
	}
}

// fields parses a protobuf message of varints and length-delimited fields.
func fields(data []byte) ([]field, error) {
	var out []field
	for i := 0; i < len(data); {
		key, j, err := readVarint(data, i)
		if err != nil {
			return nil, err
		}
		i = j
		f := field{num: key >> 3}
		switch key & 7 {
		case 0:
			if f.value, i, err = readVarint(data, i); err != nil {
				return nil, err
			}
		case 2:
			var n uint64
			if n, i, err = readVarint(data, i); err != nil {
				return nil, err
			}
			if n > uint64(len(data)-i) {
				return nil, errors.New("truncated field")
			}
			f.bytes = data[i : i+int(n)]
			i += int(n)
		default:
			return nil, fmt.Errorf("unexpected wire type %d", key&7)
		}
		out = append(out, f)
	}
	return out, nil
}

func helloRequest(name string) []byte {
	out := append([]byte{0x0a}, varint(uint64(len(name)))...)
	return append(out, name...)
}

func helloReply(data []byte) (string, error) {
	fs, err := fields(data)
	message := ""
	for _, f := range fs {
		if f.num == 1 {
			message = string(f.bytes)
		}
	}
	return message, err
}

func countRequest(count, intervalMs uint64, stopOnShutdown bool) []byte {
	var out []byte
	if count != 0 {
		out = append(append(out, 0x08), varint(count)...)
	}
	if intervalMs != 0 {
		out = append(append(out, 0x10), varint(intervalMs)...)
	}
	if stopOnShutdown {
		out = append(out, 0x18, 0x01)
	}
	return out
}

func tick(data []byte) (seq uint64, shuttingDown bool, err error) {
	fs, err := fields(data)
	for _, f := range fs {
		switch f.num {
		case 1:
			seq = f.value
		case 2:
			shuttingDown = f.value != 0
		}
	}
	return seq, shuttingDown, err
}

// rawCodec passes the hand-encoded messages through: a request is a
// []byte, a response is read into a *[]byte.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append([]byte(nil), data...)
	return nil
}

// The content type stays application/grpc (grpc-go 1.33 does not derive
// the content-subtype from a forced codec; later versions would send
// application/grpc+proto, which is what these bytes are).
func (rawCodec) Name() string { return "proto" }

// ---- outcomes

// The canonical names of the gRPC status codes (as in the gRPC spec; Go's
// codes.Code.String() spells them differently).
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}

// statusKind is how a failed call is reported: `CODE: message`.
func statusKind(err error) string {
	s := status.Convert(err)
	name, ok := codeNames[s.Code()]
	if !ok {
		name = fmt.Sprintf("CODE_%d", uint32(s.Code()))
	}
	return name + ": " + s.Message()
}

type outcome struct {
	ok   bool
	kind string
}

func wallClock() string {
	return fmt.Sprintf("%.6f", float64(time.Now().UnixNano())/1e9)
}

type opStats struct {
	outcomes   map[string]uint64
	latencies  []float64
	ok, failed uint64
}

func (s *opStats) record(o outcome, took time.Duration) {
	s.latencies = append(s.latencies, float64(took)/float64(time.Millisecond))
	if o.ok {
		s.ok++
	} else {
		s.failed++
	}
	s.outcomes[o.kind]++
}

type opJSON struct {
	Calls    uint64            `json:"calls"`
	Ok       uint64            `json:"ok"`
	Failed   uint64            `json:"failed"`
	P50Ms    float64           `json:"p50_ms"`
	P99Ms    float64           `json:"p99_ms"`
	MaxMs    float64           `json:"max_ms"`
	Outcomes map[string]uint64 `json:"outcomes"` // encoding/json sorts the keys
}

func (s *opStats) json() opJSON {
	lat := append([]float64(nil), s.latencies...)
	sort.Float64s(lat)
	n := len(lat)
	pick := func(q float64) float64 {
		if n == 0 {
			return 0
		}
		i := int(math.Ceil(float64(n) * q))
		if i < 1 {
			i = 1
		}
		if i > n {
			i = n
		}
		return math.Round(lat[i-1]*10) / 10
	}
	return opJSON{s.ok + s.failed, s.ok, s.failed, pick(0.5), pick(0.99), pick(1), s.outcomes}
}

// ---- arguments

type args struct {
	addr             string
	connections      int
	duration         time.Duration
	unaryIntervalMs  uint64
	streamCount      uint64
	streamIntervalMs uint64
	timeoutMs        uint64
	stopOnShutdown   bool
}

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "grpc_load.go: %s\n", msg)
	os.Exit(2)
}

// parseDuration reads 60s, 1.5s or 1500ms, as the other clients do.
func parseDuration(text string) (time.Duration, error) {
	var v float64
	var unit string
	switch {
	case strings.HasSuffix(text, "ms"):
		unit = "ms"
	case strings.HasSuffix(text, "s"):
		unit = "s"
	default:
		return 0, fmt.Errorf("cannot read the duration %q (use 60s or 1500ms)", text)
	}
	if _, err := fmt.Sscanf(strings.TrimSuffix(text, unit), "%g", &v); err != nil || v < 0 {
		return 0, fmt.Errorf("cannot read the duration %q (use 60s or 1500ms)", text)
	}
	if unit == "ms" {
		return time.Duration(v * float64(time.Millisecond)), nil
	}
	return time.Duration(v * float64(time.Second)), nil
}

type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func parseArgs() args {
	a := args{duration: 60 * time.Second}
	fs := flag.NewFlagSet("grpc_load.go", flag.ContinueOnError)
	fs.StringVar(&a.addr, "addr", "", "HOST:PORT to connect to")
	fs.String("transport", "grpc-go", "accepted, not used")
	fs.IntVar(&a.connections, "connections", 8, "connections (one ClientConn each)")
	fs.Var(durationFlag{&a.duration}, "duration", "how long the load runs (60s, 1500ms)")
	fs.Uint64Var(&a.unaryIntervalMs, "unary-interval-ms", 25, "pause between unary calls")
	fs.Uint64Var(&a.streamCount, "stream-count", 5, "ticks per Count stream")
	fs.Uint64Var(&a.streamIntervalMs, "stream-interval-ms", 200, "pause between ticks")
	fs.Uint64Var(&a.timeoutMs, "timeout-ms", 10000, "deadline of each call")
	fs.BoolVar(&a.stopOnShutdown, "stop-on-shutdown", false, "streams may end early on a shutting_down tick")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2) // the flag package has said why
	}
	if fs.NArg() > 0 {
		usage(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if a.addr == "" {
		usage("--addr is needed")
	}
	if a.connections < 1 {
		usage("--connections must be at least 1")
	}
	return a
}

// ---- the load

func main() {
	a := parseArgs()
	timeout := time.Duration(a.timeoutMs) * time.Millisecond
	forced := grpc.ForceCodec(rawCodec{})

	conns := make([]*grpc.ClientConn, 0, a.connections)
	for i := 0; i < a.connections; i++ {
		cc, err := grpc.Dial(a.addr, grpc.WithInsecure())
		if err != nil {
			usage(fmt.Sprintf("connection %d to %s failed: %v", i, a.addr, err))
		}
		// Dial connects in the background; wait until READY, as the other
		// clients do (channel_ready_future, waitForReady).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(ctx, s) {
				usage(fmt.Sprintf("connection %d to %s timed out (%v)", i, a.addr, s))
			}
		}
		cancel()
		conns = append(conns, cc)
	}
	fmt.Fprintf(os.Stderr, "grpc_load: %d connections established\n", len(conns))

	stop := make(chan struct{})
	why := "duration over"
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)

	var mu sync.Mutex
	stats := map[string]*opStats{
		"unary":  {outcomes: map[string]uint64{}},
		"stream": {outcomes: map[string]uint64{}},
	}

	unary := func(cc *grpc.ClientConn) outcome {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var reply []byte
		if err := cc.Invoke(ctx, "/demo.v1.Demo/Hello", helloRequest("rolling"), &reply, forced); err != nil {
			return outcome{false, statusKind(err)}
		}
		m, err := helloReply(reply)
		if err == nil && m == "hello, rolling" {
			return outcome{true, "ok"}
		}
		return outcome{false, fmt.Sprintf("wrong reply %q", m)}
	}

	desc := &grpc.StreamDesc{StreamName: "Count", ServerStreams: true}
	stream := func(cc *grpc.ClientConn) outcome {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		failed := func(got uint64, err error) outcome {
			if got == 0 {
				return outcome{false, statusKind(err)}
			}
			return outcome{false, fmt.Sprintf("after %d ticks: %s", got, statusKind(err))}
		}
		cs, err := cc.NewStream(ctx, desc, "/demo.v1.Demo/Count", forced)
		if err != nil {
			return failed(0, err)
		}
		// A SendMsg that fails with io.EOF means the stream ended: its
		// status comes from RecvMsg below.
		if err := cs.SendMsg(countRequest(a.streamCount, a.streamIntervalMs, a.stopOnShutdown)); err != nil && err != io.EOF {
			return failed(0, err)
		}
		if err := cs.CloseSend(); err != nil {
			return failed(0, err)
		}
		var got uint64
		endedEarly := false
		for {
			var msg []byte
			err := cs.RecvMsg(&msg)
			if err == io.EOF {
				break
			}
			if err != nil {
				return failed(got, err)
			}
			if endedEarly {
				return outcome{false, "a tick after the shutting_down tick"}
			}
			seq, shuttingDown, perr := tick(msg)
			got++
			if perr != nil {
				return outcome{false, fmt.Sprintf("tick %d unreadable: %v", got, perr)}
			}
			if seq != got {
				return outcome{false, fmt.Sprintf("tick %d where %d was expected", seq, got)}
			}
			if shuttingDown {
				endedEarly = true
			}
		}
		if endedEarly {
			return outcome{true, "ok, ended early by shutdown"}
		}
		if got == a.streamCount {
			return outcome{true, "ok"}
		}
		return outcome{false, fmt.Sprintf("ended cleanly after %d of %d ticks", got, a.streamCount)}
	}

	// wait pauses for d, or less when the load stops; false when stopped.
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-stop:
			return false
		}
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	var wg sync.WaitGroup
	loop := func(name string, conn int, op func(*grpc.ClientConn) outcome, cc *grpc.ClientConn, pause, offset time.Duration) {
		defer wg.Done()
		if offset > 0 && !wait(offset) {
			return
		}
		for !stopped() {
			started, startedAt := time.Now(), wallClock()
			o := op(cc)
			took := time.Since(started)
			if !o.ok {
				fmt.Fprintf(os.Stderr, "grpc_load: failed %s on connection %d: started %s, failed %s (%d ms): %s\n",
					name, conn, startedAt, wallClock(), took.Milliseconds(), o.kind)
			}
			mu.Lock()
			stats[name].record(o, took)
			mu.Unlock()
			if pause > 0 {
				wait(pause)
			}
		}
	}

	t0 := time.Now()
	pause := time.Duration(a.unaryIntervalMs) * time.Millisecond
	for i, cc := range conns {
		offset := pause * time.Duration(i) / time.Duration(a.connections)
		wg.Add(2)
		go loop("unary", i, unary, cc, pause, offset)
		go loop("stream", i, stream, cc, 0, 0)
	}
	select {
	case s := <-signals:
		if s == syscall.SIGINT {
			why = "SIGINT"
		} else {
			why = "SIGTERM"
		}
	case <-time.After(a.duration):
	}
	close(stop)
	fmt.Fprintf(os.Stderr, "grpc_load: stopping (%s) after %.1fs; waiting for calls in flight\n", why, time.Since(t0).Seconds())
	// Every call is bounded by its deadline, so this ends; bounded anyway.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout + 5*time.Second):
		fmt.Fprintln(os.Stderr, "grpc_load: calls still in flight after the timeout; reporting without them")
	}
	elapsed := time.Since(t0)

	mu.Lock()
	u, s := stats["unary"], stats["stream"]
	failures := map[string]uint64{}
	for _, op := range []string{"unary", "stream"} {
		for kind, n := range stats[op].outcomes {
			if !strings.HasPrefix(kind, "ok") {
				failures[op+": "+kind] += n
			}
		}
	}
	summary := struct {
		Addr        string            `json:"addr"`
		Connections int               `json:"connections"`
		ElapsedS    float64           `json:"elapsed_s"`
		StoppedBy   string            `json:"stopped_by"`
		Calls       uint64            `json:"calls"`
		Ok          uint64            `json:"ok"`
		Failed      uint64            `json:"failed"`
		Failures    map[string]uint64 `json:"failures"`
		Unary       opJSON            `json:"unary"`
		Stream      opJSON            `json:"stream"`
	}{
		a.addr, a.connections, math.Round(elapsed.Seconds()*100) / 100, why,
		u.ok + u.failed + s.ok + s.failed, u.ok + s.ok, u.failed + s.failed, failures,
		u.json(), s.json(),
	}
	// One line; messages as they are (no HTML escaping of <, >, &).
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	err := enc.Encode(summary)
	mu.Unlock()
	if err != nil {
		usage(fmt.Sprintf("cannot write the result: %v", err))
	}
	for _, cc := range conns {
		cc.Close()
	}
}
