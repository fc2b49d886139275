// Command chatbench measures the chat suite over protocol v1, beside a floor: a minimal
// gorilla/websocket broadcast server that does the least any such server must (see floor.go).
// It builds the services, starts Redis and each service as its own process pinned to CPU 0,
// pins itself to CPU 1, runs a scenario against the suite and (for fanout and connect) against
// the floor, and prints a table and one JSON line per run.
//
//	go run ./bench fanout -subs 1000 -pubs 1 -window 16 -msgs 2000
//	go run ./bench fanout -subs 100 -pubs 10 -rate 1000 -msgs 2000
//	go run ./bench idle -conns 10000 -hold 10s
//	go run ./bench connect -conns 5000 -concurrency 50
//	go run ./bench cleanup -conns 5000 -kill
//	go run ./bench smoke        (CI: a short fanout that must lose, duplicate and reorder nothing)
//
// -runs N repeats a scenario and reports the median. With -profile, a 10 s CPU profile and a
// heap profile of the edge are written to the working directory during the run.
package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floor-serve" {
		if err := floorServe(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "floor:", err)
			os.Exit(1)
		}
		return
	}
	if err := pinToCPU1(); err != nil {
		fmt.Fprintln(os.Stderr, "chatbench: cannot pin to CPU 1:", err)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "chatbench:", err)
		os.Exit(1)
	}
}

// pinToCPU1 re-executes the tool under taskset -c 1 (once), so that the load generator does
// not share the CPU of the system under test.
func pinToCPU1() error {
	if os.Getenv("CHATBENCH_PINNED") == "1" || runtime.NumCPU() < 2 {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return err
	}
	env := append(os.Environ(), "CHATBENCH_PINNED=1")
	return syscall.Exec(taskset, append([]string{"taskset", "-c", "1", self}, os.Args[1:]...), env)
}

type options struct {
	runs                 int
	subs, pubs, msgs     int
	window, rate, size   int
	conns, concurrency   int
	hold                 time.Duration
	kill, profile, floor bool
	edgeArgs             string
	edges                int
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: chatbench fanout|idle|connect|cleanup|smoke [flags] (see the package comment)")
	}
	scenario := args[0]
	var o options
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	fs.IntVar(&o.runs, "runs", 1, "repeat and report the median")
	fs.IntVar(&o.subs, "subs", 100, "fanout: subscribers")
	fs.IntVar(&o.pubs, "pubs", 1, "fanout: publishers")
	fs.IntVar(&o.msgs, "msgs", 1000, "fanout: messages per publisher")
	fs.IntVar(&o.window, "window", 16, "fanout closed loop: undelivered messages a publisher may have")
	fs.IntVar(&o.rate, "rate", 0, "fanout open loop: messages per second in total (0: closed loop)")
	fs.IntVar(&o.size, "size", 100, "fanout: text bytes")
	fs.IntVar(&o.conns, "conns", 1000, "idle, connect, cleanup: connections")
	fs.IntVar(&o.concurrency, "concurrency", 50, "connect: connections opened at once")
	fs.DurationVar(&o.hold, "hold", 10*time.Second, "idle: how long connections are held")
	fs.BoolVar(&o.kill, "kill", false, "cleanup: also kill the edge with SIGKILL")
	fs.BoolVar(&o.profile, "profile", false, "write CPU and heap profiles of the edge")
	fs.BoolVar(&o.floor, "floor", true, "fanout, connect: also run against the floor")
	fs.IntVar(&o.edges, "edges", 1, "edges the suite runs (connections are spread over them)")
	fs.StringVar(&o.edgeArgs, "edge-args", "", "extra flags for the edge, space-separated (e.g. \"-write-delay 2ms\")")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	conns := o.conns
	if scenario == "fanout" || scenario == "smoke" {
		conns = o.subs + o.pubs
	}
	if err := checkOpenFiles(conns); err != nil {
		return err
	}
	repo, err := repoRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "chatbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(repo, dir); err != nil {
		return err
	}

	switch scenario {
	case "smoke":
		o.subs, o.pubs, o.msgs, o.window, o.runs, o.floor = 20, 2, 200, 8, 1, false
		return fanout(dir, o, true)
	case "fanout":
		return fanout(dir, o, false)
	case "connect":
		return connect(dir, o)
	case "idle":
		return idle(dir, o)
	case "cleanup":
		return cleanup(dir, o)
	}
	return fmt.Errorf("unknown scenario %q", scenario)
}

// checkOpenFiles fails early when the scenario's connections cannot all be open at once:
// the load generator (and an edge) hold one file per connection, and Go raises the soft limit
// only as far as the hard one.
func checkOpenFiles(conns int) error {
	need := uint64(conns) + 200 // and the processes' own files
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Max < need {
		return fmt.Errorf("%d connections need about %d open files per process, but the limit is %d (ulimit -Hn)", conns, need, lim.Max)
	}
	return nil
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil {
		return "", err
	}
	w := strings.TrimSpace(string(out))
	if w == "" || w == "off" {
		return "", errors.New("run chatbench inside the repository (it builds the services)")
	}
	return filepath.Dir(w), nil
}

// line prints one JSON line for a run.
func line(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func fanout(dir string, o options, smoke bool) error {
	p := fanoutParams{Subs: o.subs, Pubs: o.pubs, Msgs: o.msgs, Window: o.window, Rate: o.rate, Size: o.size}
	kinds := []string{"suite"}
	if o.floor {
		kinds = append(kinds, "floor")
	}
	med := map[string]fanoutResult{}
	for _, kind := range kinds {
		var rs []fanoutResult
		for i := range o.runs {
			t, tokens, err := startTarget(dir, kind, max(p.Subs, p.Pubs)/20+1, o.edges, o.edgeArgs)
			if err != nil {
				return err
			}
			stopProfile := maybeProfile(t, o.profile, fmt.Sprintf("fanout-%d", i))
			r, err := runFanout(t, p, tokens)
			stopProfile()
			t.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", kind, err)
			}
			line(map[string]any{"scenario": "fanout", "target": kind, "run": i + 1, "params": p, "result": r})
			if smoke && (r.Lost != 0 || r.Dup != 0 || r.OutOfOrder != 0) {
				return fmt.Errorf("smoke: lost %d, duplicated %d, out of order %d", r.Lost, r.Dup, r.OutOfOrder)
			}
			rs = append(rs, r)
		}
		med[kind] = medianFanout(rs)
	}
	fmt.Printf("\nfanout: %d subscribers, %d publishers, %d msgs each, %s, %d-byte text; medians of %d run(s)\n",
		p.Subs, p.Pubs, p.Msgs, loopName(p), p.Size, o.runs)
	fmt.Printf("%-8s %14s %9s %9s %9s %9s %6s %6s %6s %8s\n", "target", "delivered/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "lost", "dup", "ooo", "gen cpu")
	for _, k := range kinds {
		r := med[k]
		fmt.Printf("%-8s %14.0f %9.2f %9.2f %9.2f %9.2f %6d %6d %6d %7.0f%%\n", k, r.DeliveredPerSec, r.P50ms, r.P90ms, r.P99ms, r.MaxMs, r.Lost, r.Dup, r.OutOfOrder, 100*r.LoadgenCPU)
	}
	if f, ok := med["floor"]; ok {
		s := med["suite"]
		fmt.Printf("suite/floor: delivered %.2fx, p99 %.2fx\n", s.DeliveredPerSec/f.DeliveredPerSec, s.P99ms/f.P99ms)
		line(map[string]any{"scenario": "fanout", "summary": true, "suite": s, "floor": f,
			"throughput_ratio": s.DeliveredPerSec / f.DeliveredPerSec, "p99_ratio": s.P99ms / f.P99ms})
	}
	for _, k := range kinds {
		if med[k].LoadgenCPU > 0.9 {
			fmt.Printf("note: the load generator used %.0f%% of its CPU against %s: it may be the bottleneck\n", 100*med[k].LoadgenCPU, k)
		}
	}
	return nil
}

func loopName(p fanoutParams) string {
	if p.Rate > 0 {
		return fmt.Sprintf("open loop %d msg/s", p.Rate)
	}
	return fmt.Sprintf("closed loop W=%d", p.Window)
}

func medianFanout(rs []fanoutResult) fanoutResult {
	pick := func(f func(fanoutResult) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return median(xs)
	}
	m := rs[0]
	m.DeliveredPerSec = pick(func(r fanoutResult) float64 { return r.DeliveredPerSec })
	m.P50ms = pick(func(r fanoutResult) float64 { return r.P50ms })
	m.P90ms = pick(func(r fanoutResult) float64 { return r.P90ms })
	m.P99ms = pick(func(r fanoutResult) float64 { return r.P99ms })
	m.MaxMs = pick(func(r fanoutResult) float64 { return r.MaxMs })
	m.LoadgenCPU = pick(func(r fanoutResult) float64 { return r.LoadgenCPU })
	for _, r := range rs[1:] {
		m.Lost += r.Lost
		m.Dup += r.Dup
		m.OutOfOrder += r.OutOfOrder
	}
	return m
}

// startTarget starts the suite (registering users) or the floor.
func startTarget(dir, kind string, users, edges int, edgeArgs string) (*target, []string, error) {
	var t *target
	var err error
	if kind == "floor" {
		t, err = startFloor(dir)
	} else {
		t, err = startSuite(dir, edges, strings.Fields(edgeArgs)...)
	}
	if err != nil {
		return nil, nil, err
	}
	tokens, err := registerUsers(t, users, "bench")
	if err != nil {
		t.stop()
		return nil, nil, fmt.Errorf("register users: %w", err)
	}
	return t, tokens, nil
}

// maybeProfile fetches a CPU profile (10 s, or until the run ends) and then a heap profile
// of the edge.
func maybeProfile(t *target, on bool, name string) func() {
	if !on || t.kind != "suite" {
		return func() {}
	}
	base := t.httpBase()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fetch(base+"/debug/pprof/profile?seconds=10", name+".cpu.pprof")
	}()
	return func() {
		fetch(base+"/debug/pprof/heap", name+".heap.pprof")
		<-done
	}
}

func fetch(url, file string) {
	resp, err := http.Get(url)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

func connect(dir string, o options) error {
	kinds := []string{"suite"}
	if o.floor {
		kinds = append(kinds, "floor")
	}
	res := map[string]connectResult{}
	for _, kind := range kinds {
		var rates, p99s []float64
		var last connectResult
		for i := range o.runs {
			t, tokens, err := startTarget(dir, kind, o.conns/50+1, o.edges, o.edgeArgs)
			if err != nil {
				return err
			}
			stopProfile := maybeProfile(t, o.profile, fmt.Sprintf("connect-%d", i))
			r, err := runConnect(t, o.conns, o.concurrency, tokens)
			stopProfile()
			t.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", kind, err)
			}
			line(map[string]any{"scenario": "connect", "target": kind, "run": i + 1, "conns": o.conns, "concurrency": o.concurrency, "result": r})
			rates, p99s, last = append(rates, r.ConnPerSec), append(p99s, r.P99ms), r
		}
		last.ConnPerSec, last.P99ms = median(rates), median(p99s)
		res[kind] = last
	}
	fmt.Printf("\nconnect: %d connections, %d at a time (dial + token login + join); medians of %d run(s)\n", o.conns, o.concurrency, o.runs)
	fmt.Printf("%-8s %10s %9s %9s %8s\n", "target", "conn/s", "p50 ms", "p99 ms", "gen cpu")
	for _, k := range kinds {
		r := res[k]
		fmt.Printf("%-8s %10.0f %9.2f %9.2f %7.0f%%\n", k, r.ConnPerSec, r.P50ms, r.P99ms, 100*r.LoadgenCPU)
	}
	if r, ok := res["suite"]; ok {
		fmt.Print("suite CPU per connection (last run):")
		for _, name := range []string{"edge", "auth", "room", "presence", "redis"} {
			fmt.Printf(" %s %.0f µs,", name, r.CPUPerConn[name])
		}
		fmt.Println()
		fmt.Print("edge requests per batch call (last run):")
		for _, name := range []string{"verify_token", "bind", "join"} {
			fmt.Printf(" %s %.1f,", name, r.BatchSizes[name])
		}
		fmt.Println()
		names := make([]string, 0, len(r.RedisPerConn))
		for name := range r.RedisPerConn {
			names = append(names, name)
		}
		slices.SortFunc(names, func(a, b string) int { return cmp.Compare(r.RedisPerConn[b][1], r.RedisPerConn[a][1]) })
		fmt.Print("redis per connection (last run; calls, µs inside Redis):")
		for _, name := range names {
			fmt.Printf(" %s %.2f %.1f µs,", name, r.RedisPerConn[name][0], r.RedisPerConn[name][1])
		}
		fmt.Println()
	}
	return nil
}

func idle(dir string, o options) error {
	var totals []float64
	for i := range o.runs {
		t, tokens, err := startTarget(dir, "suite", o.conns/50+1, o.edges, o.edgeArgs)
		if err != nil {
			return err
		}
		heap := func() {}
		if o.profile {
			heap = func() {
				fetch(t.httpBase()+"/debug/pprof/heap", fmt.Sprintf("idle-%d.heap.pprof", i))
			}
		}
		r, err := runIdle(t, o.conns, o.hold, tokens, heap)
		t.stop()
		if err != nil {
			return err
		}
		line(map[string]any{"scenario": "idle", "target": "suite", "run": i + 1, "conns": o.conns, "hold": o.hold.String(), "result": r})
		fmt.Printf("idle run %d: %d connections held %v: ", i+1, o.conns, o.hold)
		for _, name := range []string{"edge", "auth", "room", "presence"} {
			fmt.Printf("%s %.1f KiB, ", name, r.BytesPerConn[name]/1024)
		}
		fmt.Printf("suite total %.1f KiB/conn (redis %.1f KiB/conn)\n", r.SuiteTotal/1024, r.RedisPerConn/1024)
		totals = append(totals, r.SuiteTotal)
	}
	fmt.Printf("idle: median %.1f KiB per connection over edge, auth, room, presence\n", median(totals)/1024)
	return nil
}

func cleanup(dir string, o options) error {
	var closes, kills []float64
	for i := range o.runs {
		t, tokens, err := startTarget(dir, "suite", o.conns/50+1, o.edges, o.edgeArgs)
		if err != nil {
			return err
		}
		r, err := runCleanup(t, o.conns, tokens, o.kill)
		t.stop()
		if err != nil {
			return err
		}
		line(map[string]any{"scenario": "cleanup", "target": "suite", "run": i + 1, "conns": o.conns, "result": r})
		closes, kills = append(closes, r.CloseSeconds), append(kills, r.KillSeconds)
	}
	fmt.Printf("cleanup: %d sockets closed at once: Redis clean after %.2f s (median of %d)", o.conns, median(closes), o.runs)
	if o.kill {
		fmt.Printf("; edge SIGKILLed: clean after %.2f s", median(kills))
	}
	fmt.Println()
	return nil
}
