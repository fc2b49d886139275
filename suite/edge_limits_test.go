package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrt/chat/services/edge/edgeserver"
)

func TestCloseCodes(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-l", func(c *edgeserver.Config) {
		c.AuthTimeout = 3 * time.Second // argon2 under the race detector is slow
		c.MaxFrameBytes = 1024
	})
	tests := []struct {
		name  string
		login bool
		send  func(c *wsClient) error
		code  int
	}{
		{"frame over the limit", true, func(c *wsClient) error {
			return c.conn.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"type":"ping","pad":"`+strings.Repeat("x", 1100)+`"}`))
		}, websocket.CloseMessageTooBig},
		{"invalid UTF-8", true, func(c *wsClient) error {
			return c.conn.WriteMessage(websocket.TextMessage, []byte("{\"id\":1,\"type\":\"ping\",\"x\":\"\xff\xfe\"}"))
		}, websocket.CloseInvalidFramePayloadData},
		{"binary frame", true, func(c *wsClient) error {
			return c.conn.WriteMessage(websocket.BinaryMessage, []byte(`{"id":1,"type":"ping"}`))
		}, websocket.CloseUnsupportedData},
		{"no login in time", false, func(*wsClient) error { return nil }, websocket.ClosePolicyViolation},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := connectWS(t, e)
			if tc.login {
				c.ok("register", map[string]any{"username": "closer" + string(rune('a'+i)), "password": "password-x"})
			}
			if err := tc.send(c); err != nil {
				t.Fatal(err)
			}
			if got := c.closeCode(); got != tc.code {
				t.Fatalf("closed with %d (%v), want %d", got, c.closeErr, tc.code)
			}
		})
	}

	// A frame at the limit passes.
	c := connectWS(t, e)
	frame := `{"id":1,"type":"ping","pad":"` + strings.Repeat("x", 1024-len(`{"id":1,"type":"ping","pad":""}`)) + `"}`
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	if r := c.next(); r["ok"] != true {
		t.Fatalf("frame of exactly 1024 bytes: %v", r)
	}
}

func TestSilentPeerIsReaped(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-s", func(c *edgeserver.Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 400 * time.Millisecond
	})
	alive := connectWS(t, e)
	// A half-open peer: it reads, but never answers pings.
	silent, err := dialWSWith(t, e.url+"/ws", nil, func(c *websocket.Conn) { c.SetPingHandler(func(string) error { return nil }) })
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	silent.closeCode()
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("silent peer reaped after %v", d)
	}
	// gorilla's client answers pings: that connection lives on.
	alive.ok("ping", nil)
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-r", func(c *edgeserver.Config) {
		c.ConnRate, c.ConnBurst = 1, 5
		c.UserRate, c.UserBurst = 0.1, 6
		c.AbuseLimit = 10
	})
	c := b.user(t, e, "spammer") // 1 token spent
	limited := 0
	for range 6 {
		if r := c.call("ping", nil); r["ok"] != true {
			if e, _ := r["error"].(map[string]any); e["code"] != "rate_limited" {
				t.Fatalf("reply %v", r)
			}
			limited++
		}
	}
	if limited < 1 || limited > 3 {
		t.Fatalf("%d of 6 pings limited with a burst of 5", limited)
	}
	// The user's other connection shares the user's bucket (6, of which the first connection
	// spent 4): it runs dry before its own bucket (5) does.
	c2 := connectWS(t, e)
	c2.ok("login", map[string]any{"username": "spammer", "password": "password-spammer"})
	sawLimit := false
	for range 4 {
		if r := c2.call("ping", nil); r["ok"] != true {
			sawLimit = true
		}
	}
	if !sawLimit {
		t.Fatal("the user's bucket did not limit its second connection")
	}
	// Sustained abuse closes the connection.
	for range 20 {
		if err := c.conn.WriteMessage(websocket.TextMessage, []byte(`{"id":99,"type":"ping"}`)); err != nil {
			break
		}
	}
	if got := c.closeCode(); got != websocket.ClosePolicyViolation {
		t.Fatalf("abuse closed with %d, want 1008", got)
	}
}

func TestOriginCheck(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-o", func(c *edgeserver.Config) { c.AllowedOrigins = "https://app.example.com, http://localhost:3000" })
	host := strings.TrimPrefix(e.url, "ws://")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + host, true},
		{"https://app.example.com", true},
		{"HTTPS://APP.EXAMPLE.COM", true},
		{"http://localhost:3000", true},
		{"https://app.example.com.evil.io", false},
		{"https://evil.io", false},
		{"http://app.example.com", false},
		{"https://app.example.com:8443", false},
		{"http://localhost:3001", false},
		{"null", false},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			c, err := dialWS(t, e.url+"/ws", h)
			if tc.ok != (err == nil) {
				t.Fatalf("origin %q: dial error %v, want ok=%v", tc.origin, err, tc.ok)
			}
			if c != nil {
				c.ok("ping", nil)
			}
		})
	}
}
