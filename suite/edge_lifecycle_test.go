package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	"github.com/chatrt/chat/platform/servertest"
)

// TestJoinIsRaceFreeAndRecovers: joins while a room is busy never lose or duplicate a message
// after the join's last_seq, and join with since answers exactly the missed messages.
func TestJoinIsRaceFreeAndRecovers(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	ea, eb := b.startEdge(t, "edge-j1", nil), b.startEdge(t, "edge-j2", nil)
	pub := b.user(t, ea, "talker")
	pub.ok("join", map[string]any{"room": "busy"})

	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			pub.ok("send", map[string]any{"room": "busy", "text": fmt.Sprint(i)})
		}
	}()
	// Joiners on both edges, at different moments of the stream.
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := ea
			if i%2 == 1 {
				e = eb
			}
			time.Sleep(time.Duration(i) * 15 * time.Millisecond)
			c := b.user(t, e, fmt.Sprint("joiner", i))
			join := c.ok("join", map[string]any{"room": "busy"})
			last := uint64(join["last_seq"].(float64))
			<-done
			if last == n {
				c.quiet(100 * time.Millisecond)
				return
			}
			seqs, _ := collectMessages(t, c, "busy", int(n-last))
			checkSeqs(t, fmt.Sprint("joiner ", i), seqs, last+1)
			c.quiet(100 * time.Millisecond)
		}()
	}
	wg.Wait()
	<-done

	// Recovery: a client that saw up to seq 150 of this epoch gets 151..200, all or nothing.
	epoch := pub.ok("join", map[string]any{"room": "busy"})["epoch"]
	late := b.user(t, eb, "late")
	rec := late.ok("join", map[string]any{"room": "busy", "since": map[string]any{"epoch": epoch, "seq": 150}})
	missed := rec["missed"].([]any)
	if rec["recovered"] != true || len(missed) != 50 || missed[0].(map[string]any)["seq"] != float64(151) || missed[49].(map[string]any)["text"] != "199" {
		t.Fatalf("recovery answered recovered=%v with %d missed", rec["recovered"], len(missed))
	}
	other := b.user(t, eb, "stale")
	rec = other.ok("join", map[string]any{"room": "busy", "since": map[string]any{"epoch": "another-life", "seq": 150}})
	if rec["recovered"] != false || len(rec["missed"].([]any)) != 0 {
		t.Fatalf("recovery from another epoch: %v", rec)
	}
}

// TestServiceOutageGivesUnavailable: with the room service down, commands get `unavailable`
// fast and the socket stays usable; when the service returns, the edge works again.
func TestServiceOutageGivesUnavailable(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-out", nil)
	c := b.user(t, e, "patient")
	c.ok("join", map[string]any{"room": "r"})

	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		b.restartRoom(t, 1500*time.Millisecond)
	}()
	time.Sleep(300 * time.Millisecond)
	begin := time.Now()
	if code := c.fails("send", map[string]any{"room": "r", "text": "anyone?"}); code != "unavailable" {
		t.Fatalf("send with the room service down: %s", code)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("the unavailable reply took %v", d)
	}
	c.ok("ping", nil)
	<-restarted
	waitFor(t, "the room service to answer through the edge", func() bool {
		return c.call("send", map[string]any{"room": "r", "text": "back"})["ok"] == true
	})
	if ev := c.nextOf("message"); ev["text"] != "back" {
		t.Fatalf("event %v", ev)
	}
}

// TestGracefulShutdown: the edge closes every socket with 1001, unbinds everything and stops.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	stay := b.startEdge(t, "edge-stays", nil)
	e := b.startEdge(t, "edge-stops", nil)
	watcher := b.user(t, stay, "watcher")
	watcher.ok("join", map[string]any{"room": "r"})
	var clients []*wsClient
	for i := range 3 {
		c := b.user(t, e, fmt.Sprint("leaver", i))
		c.ok("join", map[string]any{"room": "r"})
		clients = append(clients, c)
	}
	begin := time.Now()
	e.stop()
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	for _, c := range clients {
		if code := c.closeCode(); code != websocket.CloseGoingAway {
			t.Fatalf("closed with %d, want 1001", code)
		}
	}
	left := 0
	for left < 3 {
		if watcher.next()["type"] == "left" {
			left++
		}
	}
	if who := watcher.ok("who", map[string]any{"room": "r"}); who["member_count"] != float64(1) {
		t.Fatalf("who after shutdown: %v", who)
	}
	ctx := servertest.Ctx(t)
	if n := b.rdb.ZScore(ctx, b.cfg.presence.Redis.KeyPrefix+"leases", "edge-stops").Val(); n > float64(time.Now().UnixMilli()) {
		t.Fatal("the stopped edge still holds a live lease")
	}
	if m := b.rdb.HGetAll(ctx, b.cfg.presence.Redis.KeyPrefix+"edge:{edge-stops}:conns").Val(); len(m) != 0 {
		t.Fatalf("connections still bound to the stopped edge: %v", m)
	}
}

// TestEdgeKilled: an edge process killed with SIGKILL leaves nothing behind once its lease
// lapses; the other edge's users see `left`.
func TestEdgeKilled(t *testing.T) {
	t.Parallel()
	b := startBackend(t, func(s *services) {
		s.presence.LeaseTTL = time.Second
		s.presence.SweepInterval = 200 * time.Millisecond
	})
	stay := b.startEdge(t, "edge-alive", nil)
	watcher := b.user(t, stay, "survivor")
	watcher.ok("join", map[string]any{"room": "r"})

	// The doomed edge is a real process, built from cmd/edge.
	bin := filepath.Join(t.TempDir(), "edge")
	build := exec.Command("go", "build", "-o", bin, "github.com/chatrt/chat/services/edge/cmd/edge")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build edge: %v\n%s", err, out)
	}
	cfg := b.edgeConfig(t, "edge-doomed")
	port := freePort(t)
	cmd := exec.Command(bin,
		"-http-addr", port, "-edge-id", "edge-doomed",
		"-auth-addr", cfg.AuthAddr, "-room-addr", cfg.RoomAddr, "-presence-addr", cfg.PresenceAddr,
		"-redis-addrs", cfg.Redis.Addrs, "-room-key-prefix", cfg.RoomKeyPrefix, "-heartbeat-interval", "200ms",
	)
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	doomed := &edge{url: "ws://" + port}
	waitFor(t, "the doomed edge to listen", func() bool {
		c, err := dialWS(t, doomed.url+"/ws", nil)
		if err == nil {
			c.conn.Close()
		}
		return err == nil
	})
	var victims []string
	for i := range 2 {
		c := connectWS(t, doomed)
		reg := c.ok("register", map[string]any{"username": fmt.Sprint("victim", i), "password": "password-victim"})
		c.ok("join", map[string]any{"room": "r"})
		victims = append(victims, reg["user_id"].(string))
	}
	for range 2 {
		watcher.nextOf("joined")
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for left := 0; left < 2; {
		if watcher.next()["type"] == "left" {
			left++
		}
	}
	// Lease TTL (1s) + one sweep (0.2s), and the room's reaction.
	if d := time.Since(killed); d > 3*time.Second {
		t.Fatalf("left after %v", d)
	}
	waitFor(t, "the lapsed lease to go", func() bool {
		return b.rdb.ZScore(servertest.Ctx(t), b.cfg.presence.Redis.KeyPrefix+"leases", "edge-doomed").Err() != nil
	})
	st, err := b.presence.OnlineStatus(servertest.Ctx(t), &presencev1.OnlineStatusRequest{UserIds: victims})
	if err != nil || st.GetStatuses()[0].GetOnline() || st.GetStatuses()[1].GetOnline() {
		t.Fatalf("victims still online: %v %v", st, err)
	}
	for k, v := range dumpKeys(t, b.rdb, b.cfg.room.Redis.KeyPrefix) {
		if strings.Contains(k, "edge-doomed") || strings.Contains(v, "edge-doomed") {
			t.Errorf("room key %s still holds the dead edge's connections: %s", k, v)
		}
	}
	for k, v := range dumpKeys(t, b.rdb, b.cfg.presence.Redis.KeyPrefix) {
		if strings.Contains(k, "edge-doomed") || strings.Contains(v, "edge-doomed") {
			t.Errorf("presence key %s still holds the dead edge: %s", k, v)
		}
	}
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	return servertest.DeadAddr(t)
}

// TestLeaseLossClosesConnections: when presence lets an edge's lease lapse (a partition, a
// long pause), its connections were unbound there, so the edge closes them (1012) and their
// clients reconnect, rather than living on as ghosts presence knows nothing of.
func TestLeaseLossClosesConnections(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-lapse", nil)
	c := b.user(t, e, "partitioned")
	c.ok("join", map[string]any{"room": "r"})
	// What a lapse looks like to presence: the lease's deadline has passed.
	if err := b.rdb.ZAdd(servertest.Ctx(t), b.cfg.presence.Redis.KeyPrefix+"leases", redis.Z{Score: 1, Member: "edge-lapse"}).Err(); err != nil {
		t.Fatal(err)
	}
	if code := c.closeCode(); code != websocket.CloseServiceRestart {
		t.Fatalf("closed with %d, want 1012", code)
	}
	// New connections work: the edge holds a new lease.
	again := b.user(t, e, "reconnected")
	again.ok("join", map[string]any{"room": "r"})
}
