package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
)

// loadgenCPU is the CPU time this process has used, in seconds.
func loadgenCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// connectResult is what a connect run measured.
type connectResult struct {
	ConnPerSec float64 `json:"conn_per_sec"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	LoadgenCPU float64 `json:"loadgen_cpu"`
	// CPUPerConn is each process's CPU time per connection, in microseconds.
	CPUPerConn map[string]float64 `json:"cpu_us_per_conn"`
	// BatchSizes is the edge's mean requests per batch call, by call (suite only).
	BatchSizes map[string]float64 `json:"batch_sizes,omitempty"`
	// RedisPerConn is, by command, Redis's calls and microseconds per connection (suite only).
	RedisPerConn map[string][2]float64 `json:"redis_per_conn,omitempty"`
}

func runConnect(t *target, n, c int, tokens []string) (connectResult, error) {
	cpu0, procs0 := loadgenCPU(), t.cpuSeconds()
	var cmds0 map[string][2]float64
	if t.kind == "suite" {
		cmds0, _ = redisCommands(t.redis) // diagnostics: a run without them is still a run
	}
	start := time.Now()
	conns, lat, err := openConns(t, n, c, tokens, "bench-connect")
	elapsed := time.Since(start)
	cpu := loadgenCPU() - cpu0
	perConn := map[string]float64{}
	for name, sec := range t.cpuSeconds() {
		perConn[name] = (sec - procs0[name]) / float64(n) * 1e6
	}
	var sizes map[string]float64
	var perCmd map[string][2]float64
	if t.kind == "suite" {
		sizes, _ = batchSizes(t)
		if cmds, err := redisCommands(t.redis); err == nil && cmds0 != nil {
			perCmd = redisPerConn(cmds0, cmds, n)
		}
	}
	closeAll(conns)
	if err != nil {
		return connectResult{}, err
	}
	slices.Sort(lat)
	return connectResult{
		ConnPerSec:   float64(n) / elapsed.Seconds(),
		P50ms:        float64(lat[n/2].Microseconds()) / 1000,
		P99ms:        float64(lat[n*99/100].Microseconds()) / 1000,
		LoadgenCPU:   cpu / elapsed.Seconds(),
		CPUPerConn:   perConn,
		BatchSizes:   sizes,
		RedisPerConn: perCmd,
	}, nil
}

// idleResult is what an idle run measured: RSS growth per connection, per process.
type idleResult struct {
	BytesPerConn map[string]float64 `json:"bytes_per_conn"`
	SuiteTotal   float64            `json:"suite_bytes_per_conn"`
	RedisPerConn float64            `json:"redis_bytes_per_conn"`
}

func runIdle(t *target, n int, hold time.Duration, tokens []string, onIdle func()) (idleResult, error) {
	before := t.rss()
	conns, _, err := openConns(t, n, 50, tokens, "bench-idle")
	defer closeAll(conns)
	if err != nil {
		return idleResult{}, err
	}
	time.Sleep(hold)
	after := t.rss()
	if onIdle != nil {
		onIdle()
	}
	r := idleResult{BytesPerConn: map[string]float64{}}
	for name, b := range after {
		// A process that shrank meanwhile (auth returning its hashing memory) adds nothing.
		per := max(float64(b-before[name]), 0) / float64(n)
		if name == "redis" {
			r.RedisPerConn = per
			continue
		}
		r.BytesPerConn[name] = per
		r.SuiteTotal += per
	}
	return r, nil
}

// cleanupResult is how long Redis kept anything of closed connections.
type cleanupResult struct {
	CloseSeconds float64 `json:"close_seconds"`
	KillSeconds  float64 `json:"kill_seconds"`
}

// runCleanup closes n connections at once and waits until Redis holds nothing of them; then,
// with n more, kills the edge with SIGKILL and waits again (lease expiry).
func runCleanup(t *target, n int, tokens []string, kill bool) (cleanupResult, error) {
	rdb := redis.NewClient(&redis.Options{Addr: t.redis})
	defer rdb.Close()
	room := "bench-cleanup"
	edgeKey := "presence:edge:{" + t.edgeID + "}:conns"
	roomKey := "room:room:{" + base64.RawURLEncoding.EncodeToString([]byte(room)) + "}:conns"
	left := func() (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, err := rdb.HLen(ctx, edgeKey).Result()
		if err != nil {
			return 0, err
		}
		b, err := rdb.HLen(ctx, roomKey).Result()
		return a + b, err
	}
	wait := func(limit time.Duration) (time.Duration, error) {
		start := time.Now()
		for time.Since(start) < limit {
			k, err := left()
			if err != nil {
				return 0, err
			}
			if k == 0 {
				return time.Since(start), nil
			}
			time.Sleep(10 * time.Millisecond)
		}
		return 0, fmt.Errorf("redis still holds connections after %v", limit)
	}
	var r cleanupResult
	conns, _, err := openConns(t, n, 50, tokens, room)
	if err != nil {
		closeAll(conns)
		return r, err
	}
	if k, _ := left(); k < int64(n) {
		return r, fmt.Errorf("only %d of %d connections in redis before closing", k, 2*n)
	}
	begin := time.Now()
	closeAll(conns)
	if _, err := wait(60 * time.Second); err != nil {
		return r, err
	}
	r.CloseSeconds = time.Since(begin).Seconds()
	if !kill {
		return r, nil
	}
	conns, _, err = openConns(t, n, 50, tokens, room)
	defer closeAll(conns)
	if err != nil {
		return r, err
	}
	begin = time.Now()
	if err := t.proc("edge").cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return r, err
	}
	if _, err := wait(120 * time.Second); err != nil {
		return r, err
	}
	r.KillSeconds = time.Since(begin).Seconds()
	return r, nil
}

// batchSizes reads the edge's mean number of requests per batch call, by call (see the edge's
// edge_batch_requests histogram), so a run shows how much its calls were batched.
func batchSizes(t *target) (map[string]float64, error) {
	resp, err := http.Get(t.httpBase() + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	if f := families["edge_batch_requests"]; f != nil {
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			if h.GetSampleCount() == 0 {
				continue
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "call" {
					out[l.GetValue()] = h.GetSampleSum() / float64(h.GetSampleCount())
				}
			}
		}
	}
	return out, nil
}

// redisCommands reads Redis's per-command counters (INFO commandstats): calls and
// microseconds, by command.
func redisCommands(addr string) (map[string][2]float64, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := rdb.InfoMap(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	out := map[string][2]float64{}
	for name, line := range info["Commandstats"] { // "calls=3,usec=12,usec_per_call=4.00,..."
		var v [2]float64
		for _, kv := range strings.Split(line, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				v[0], _ = strconv.ParseFloat(val, 64)
			case "usec":
				v[1], _ = strconv.ParseFloat(val, 64)
			}
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = v
	}
	return out, nil
}

// redisPerConn is what each command cost Redis per connection between two readings: calls
// and microseconds, for the commands that ran.
func redisPerConn(before, after map[string][2]float64, n int) map[string][2]float64 {
	out := map[string][2]float64{}
	for name, a := range after {
		b := before[name]
		if a[0] > b[0] {
			out[name] = [2]float64{(a[0] - b[0]) / float64(n), (a[1] - b[1]) / float64(n)}
		}
	}
	return out
}
