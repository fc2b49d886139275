package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process the benchmark started.
type proc struct {
	name string
	cmd  *exec.Cmd
}

// target is what a scenario drives: the suite (four processes and Redis) or the floor.
type target struct {
	kind    string   // "suite" or "floor"
	url     string   // ws://host:port/ws of the first edge
	urls    []string // every edge's
	procs   []*proc
	redis   string // host:port of the suite's Redis
	edgeID  string
	workDir string
	stopped bool
}

// cpu0 runs a command pinned to CPU 0, where the system under test lives.
// Should chatbench die, the kernel kills the process too (no suite is left running).
func cpu0(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("taskset", append([]string{"-c", "0", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// freeAddr returns a loopback address that was free a moment ago; if none can be had, it
// returns one the next listen will report an error for.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:1"
	}
	defer l.Close()
	return l.Addr().String()
}

// buildBinaries builds the four services (and this tool, for the floor) into dir.
func buildBinaries(repo, dir string) error {
	for _, svc := range []string{"auth", "room", "presence", "edge"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, svc), "./services/"+svc+"/cmd/"+svc)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", svc, err, out)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return copyFile(self, filepath.Join(dir, "chatbench"))
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

func (t *target) start(p *proc) error {
	p.cmd.Stdout, p.cmd.Stderr = nil, nil
	if os.Getenv("CHATBENCH_LOG") == "1" {
		p.cmd.Stderr = os.Stderr
	}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	t.procs = append(t.procs, p)
	return nil
}

// startSuite starts Redis and the four services, each its own process on CPU 0, with the
// limits a load test needs (rate limits off, large queues), and waits until the edge is ready.
func startSuite(dir string, edges int, edgeArgs ...string) (*target, error) {
	t := &target{kind: "suite", workDir: dir, edgeID: "bench-edge"}
	redisAddr := freeAddr()
	_, redisPort, _ := net.SplitHostPort(redisAddr)
	if err := t.start(&proc{name: "redis", cmd: cpu0("redis-server", "--port", redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")}); err != nil {
		return nil, err
	}
	t.redis = redisAddr
	auth, room, presence, edge := freeAddr(), freeAddr(), freeAddr(), freeAddr()
	common := []string{"-redis-addrs", redisAddr, "-metrics-addr", "", "-log-level", "warn"}
	svcs := []struct {
		name string
		args []string
	}{
		{"auth", append([]string{"-grpc-addr", auth, "-hash-concurrency", "1"}, common...)},
		{"room", append([]string{"-grpc-addr", room}, common...)},
		{"presence", append([]string{"-grpc-addr", presence}, common...)},
	}
	for _, s := range svcs {
		if err := t.start(&proc{name: s.name, cmd: cpu0(filepath.Join(dir, s.name), s.args...)}); err != nil {
			t.stop()
			return nil, err
		}
	}
	for i := range max(edges, 1) {
		id := t.edgeID
		if i > 0 {
			id = fmt.Sprintf("%s-%d", t.edgeID, i+1)
			edge = freeAddr()
		}
		args := append([]string{
			"-http-addr", edge, "-edge-id", id, "-auth-addr", auth, "-room-addr", room, "-presence-addr", presence,
			"-redis-addrs", redisAddr, "-log-level", "warn", "-pprof",
			"-conn-rate", "1000000", "-conn-burst", "1000000", "-user-rate", "1000000", "-user-burst", "1000000",
			"-heartbeat-interval", "1s",
		}, edgeArgs...)
		name := "edge"
		if i > 0 {
			name = fmt.Sprintf("edge%d", i+1)
		}
		if err := t.start(&proc{name: name, cmd: cpu0(filepath.Join(dir, "edge"), args...)}); err != nil {
			t.stop()
			return nil, err
		}
		t.urls = append(t.urls, "ws://"+edge+"/ws")
		if err := waitReady("http://"+edge+"/healthz", 30*time.Second); err != nil {
			t.stop()
			return nil, err
		}
	}
	t.url = t.urls[0]
	return t, nil
}

// startFloor starts the floor server on CPU 0.
func startFloor(dir string) (*target, error) {
	t := &target{kind: "floor", workDir: dir}
	addr := freeAddr()
	if err := t.start(&proc{name: "floor", cmd: cpu0(filepath.Join(dir, "chatbench"), "floor-serve", "-addr", addr)}); err != nil {
		return nil, err
	}
	t.url = "ws://" + addr + "/ws"
	t.urls = []string{t.url}
	if err := waitReady("http://"+addr+"/healthz", 10*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

func waitReady(url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v", url, limit)
}

// stop ends every process (SIGTERM, then SIGKILL after 10s).
func (t *target) stop() {
	if t.stopped {
		return
	}
	t.stopped = true
	for i := len(t.procs) - 1; i >= 0; i-- {
		p := t.procs[i]
		_ = p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	}
}

// proc finds a process by name.
func (t *target) proc(name string) *proc {
	for _, p := range t.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// rss reads the resident set size of each process, in bytes. Processes run under taskset,
// which execs them: the pid is the process's own.
func (t *target) rss() map[string]int64 {
	out := map[string]int64{}
	for _, p := range t.procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				out[p.name] = kb * 1024
			}
		}
	}
	return out
}

// cpuSeconds reads the CPU time (user + system) each process has used.
func (t *target) cpuSeconds() map[string]float64 {
	out := map[string]float64{}
	tick := 100.0 // USER_HZ on Linux
	for _, p := range t.procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 13 {
			u, _ := strconv.ParseFloat(fields[11], 64)
			sy, _ := strconv.ParseFloat(fields[12], 64)
			out[p.name] = (u + sy) / tick
		}
	}
	return out
}

// httpBase is the first edge's (or the floor's) HTTP address, for /debug/pprof and /healthz.
func (t *target) httpBase() string {
	return strings.Replace(strings.TrimSuffix(t.url, "/ws"), "ws://", "http://", 1)
}
