package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrt/chat/platform/servertest"
	"github.com/chatrt/chat/services/edge/edgeserver"
)

// collectMessages reads frames until it has n message events of room, and returns their seqs
// and texts in arrival order.
func collectMessages(t *testing.T, c *wsClient, room string, n int) ([]uint64, []string) {
	t.Helper()
	var seqs []uint64
	var texts []string
	for len(seqs) < n {
		m := c.next()
		if m["type"] != "message" || m["room"] != room {
			continue
		}
		seqs = append(seqs, uint64(m["seq"].(float64)))
		texts = append(texts, m["text"].(string))
	}
	return seqs, texts
}

// checkSeqs fails unless seqs are exactly from, from+1, ..., in order.
func checkSeqs(t *testing.T, who string, seqs []uint64, from uint64) {
	t.Helper()
	for i, s := range seqs {
		if s != from+uint64(i) {
			t.Fatalf("%s received seqs %v: want %d..%d exactly once, in order", who, seqs, from, from+uint64(len(seqs))-1)
		}
	}
}

// TestTwoEdges: users on edge A and edge B share a room through Redis.
func TestTwoEdges(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	ea := b.startEdge(t, "edge-a", nil)
	eb := b.startEdge(t, "edge-b", nil)
	a1, a2 := b.user(t, ea, "ann"), b.user(t, ea, "abe")
	b1, b2 := b.user(t, eb, "ben"), b.user(t, eb, "bea")
	all := []*wsClient{a1, a2, b1, b2}
	for _, c := range all {
		c.ok("join", map[string]any{"room": "shared 房间"})
	}
	who := a1.ok("who", map[string]any{"room": "shared 房间"})
	if who["member_count"] != float64(4) {
		t.Fatalf("who on A: %v", who)
	}

	const each = 25
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c.ok("send", map[string]any{"room": "shared 房间", "text": fmt.Sprintf("%p-%d", c, i)})
			}
		}()
	}
	wg.Wait()
	for i, c := range all {
		seqs, texts := collectMessages(t, c, "shared 房间", 4*each)
		checkSeqs(t, fmt.Sprint("client ", i), seqs, 1)
		seen := map[string]bool{}
		for _, tx := range texts {
			seen[tx] = true
		}
		if len(seen) != 4*each {
			t.Fatalf("client %d received %d distinct messages, want %d", i, len(seen), 4*each)
		}
	}

	// Closing the sockets on B produces `left` on A.
	b1.conn.Close()
	b2.conn.Close()
	left := map[string]bool{}
	for len(left) < 2 {
		if m := a1.next(); m["type"] == "left" {
			left[m["username"].(string)] = true
		}
	}
	if !left["ben"] || !left["bea"] {
		t.Fatalf("left events for %v", left)
	}
	who = a2.ok("who", map[string]any{"room": "shared 房间"})
	if who["member_count"] != float64(2) {
		t.Fatalf("who after B's users left: %v", who)
	}
}

// TestSlowConsumerIsClosed: a member that stops reading is closed (1008 "slow consumer")
// while the rest of its room keeps receiving everything.
func TestSlowConsumerIsClosed(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-slow", func(c *edgeserver.Config) { c.OutboundQueueBytes = 64 << 10 })
	fast, pub := b.user(t, e, "fast"), b.user(t, e, "pub")
	// The slow client reads nothing after joining, through a tiny receive buffer.
	slowConn := dialSlow(t, e)
	for _, c := range []*wsClient{fast, pub} {
		c.ok("join", map[string]any{"room": "r"})
	}
	pub.ok("send", map[string]any{"room": "r", "text": "warm-up"})

	text := strings.Repeat("x", 4000)
	const n = 1500
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			if r := pub.call("send", map[string]any{"room": "r", "text": text}); r["ok"] != true {
				t.Errorf("send: %v", r)
				return
			}
		}
	}()
	seqs, _ := collectMessages(t, fast, "r", n+1)
	checkSeqs(t, "fast", seqs, 1)
	<-done

	// The slow one was closed and left the room.
	waitFor(t, "the slow consumer to leave", func() bool {
		who := fast.ok("who", map[string]any{"room": "r"})
		return who["member_count"] == float64(2)
	})
	slowConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var closeErr error
	for closeErr == nil {
		_, _, closeErr = slowConn.ReadMessage()
	}
	if ce, ok := closeErr.(*websocket.CloseError); ok && ce.Code != websocket.ClosePolicyViolation {
		t.Fatalf("slow consumer closed with %v", ce)
	}
}

// dialSlow connects a client with a 4 KiB receive buffer that logs in, joins room "r", and
// then reads nothing.
func dialSlow(t *testing.T, e *edge) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		return c, err
	}}
	conn, _, err := d.Dial(e.url+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for i, cmd := range []string{
		`{"id":1,"type":"register","username":"slow","password":"password-slow"}`,
		`{"id":2,"type":"join","room":"r"}`,
	} {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		for {
			var r map[string]any
			if err := conn.ReadJSON(&r); err != nil {
				t.Fatal(err)
			}
			if r["id"] == float64(i+1) {
				if r["ok"] != true {
					t.Fatalf("slow client %s: %v", cmd, r)
				}
				break
			}
		}
	}
	return conn
}

// TestPubSubGapIsFilled drops the edge's Redis subscription connection mid-stream: every
// client still receives every seq exactly once, in order.
func TestPubSubGapIsFilled(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-gap", nil)
	other := b.startEdge(t, "edge-pub", nil)
	recv := b.user(t, e, "receiver")
	pub := b.user(t, other, "publisher")
	recv.ok("join", map[string]any{"room": "gappy"})
	pub.ok("join", map[string]any{"room": "gappy"})

	const n = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			pub.ok("send", map[string]any{"room": "gappy", "text": fmt.Sprint(i)})
			if i == 100 || i == 200 {
				killPubSub(t, b, "edge-gap")
			}
		}
	}()
	seqs, _ := collectMessages(t, recv, "gappy", n)
	<-done
	checkSeqs(t, "receiver", seqs, 1)
	recv.quiet(300 * time.Millisecond) // and nothing twice
}

// killPubSub kills an edge's Redis pub/sub connection (found by its client name), as a
// network fault would.
func killPubSub(t *testing.T, b *backend, edgeID string) {
	t.Helper()
	ctx := servertest.Ctx(t)
	list, err := b.rdb.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " sub=") || strings.Contains(line, " sub=0 ") {
			continue
		}
		if !strings.Contains(line, " name=chat-"+edgeID+" ") {
			continue
		}
		var id string
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
		}
		if err := b.rdb.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
			t.Fatal(err)
		}
		killed++
	}
	if killed == 0 {
		t.Fatalf("no pub/sub connection of the edge found in\n%s", list)
	}
}
