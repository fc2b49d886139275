package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	authv1 "github.com/chatrt/chat/gen/chat/auth/v1"
	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/platform/redistest"
	"github.com/chatrt/chat/platform/servertest"
	"github.com/chatrt/chat/services/auth/authserver"
	"github.com/chatrt/chat/services/edge/edgeserver"
	"github.com/chatrt/chat/services/presence/presenceserver"
	"github.com/chatrt/chat/services/room/roomserver"
)

// backend is the auth, room and presence services, each its real Serve on loopback TCP,
// sharing one Redis under a test prefix.
type backend struct {
	auth         authv1.AuthServiceClient
	room         roomv1.RoomServiceClient
	presence     presencev1.PresenceServiceClient
	rdb          *redis.Client
	cfg          services
	prefix       string
	addrs        struct{ auth, room, presence string }
	stopRoomOnce func()
}

func startBackend(t *testing.T, edit func(*services)) *backend {
	t.Helper()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t, rdb)
	s, err := configure(redistest.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s.auth.Redis.KeyPrefix = prefix + "auth:"
	s.room.Redis.KeyPrefix = prefix + "room:"
	s.presence.Redis.KeyPrefix = prefix + "presence:"
	s.room.PresenceEvents = s.presence.Redis.KeyPrefix + "events"
	s.auth.ShutdownTimeout, s.room.ShutdownTimeout, s.presence.ShutdownTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	s.auth.HashConcurrency = 4
	if edit != nil {
		edit(&s)
	}
	b := &backend{rdb: rdb, cfg: s, prefix: prefix}
	var conn *grpc.ClientConn
	conn, b.addrs.auth, _ = serve(t, s.auth.Config, "", func(ctx context.Context, r redis.UniversalClient, l net.Listener) error {
		return authserver.Serve(ctx, s.auth, servertest.Logger(), r, l, nil)
	})
	b.auth = authv1.NewAuthServiceClient(conn)
	var stopRoom func()
	conn, b.addrs.room, stopRoom = serve(t, s.room.Config, "", func(ctx context.Context, r redis.UniversalClient, l net.Listener) error {
		return roomserver.Serve(ctx, s.room, servertest.Logger(), r, l, nil)
	})
	b.room = roomv1.NewRoomServiceClient(conn)
	b.stopRoomOnce = stopRoom
	conn, b.addrs.presence, _ = serve(t, s.presence.Config, "", func(ctx context.Context, r redis.UniversalClient, l net.Listener) error {
		return presenceserver.Serve(ctx, s.presence, servertest.Logger(), r, l, nil)
	})
	b.presence = presencev1.NewPresenceServiceClient(conn)
	return b
}

// restartRoom stops the room service and starts it again on the same address after down.
func (b *backend) restartRoom(t *testing.T, down time.Duration) {
	t.Helper()
	b.stopRoomOnce()
	time.Sleep(down)
	_, _, b.stopRoomOnce = serve(t, b.cfg.room.Config, b.addrs.room, func(ctx context.Context, r redis.UniversalClient, l net.Listener) error {
		return roomserver.Serve(ctx, b.cfg.room, servertest.Logger(), r, l, nil)
	})
}

// serve runs one service's Serve on a loopback port (addr, or any when empty) until the test
// ends or stop is called, and dials it.
func serve(t *testing.T, cfg platform.Config, addr string, run func(context.Context, redis.UniversalClient, net.Listener) error) (*grpc.ClientConn, string, func()) {
	t.Helper()
	rdb, err := platform.NewRedis(cfg.Redis)
	if err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, rdb, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
			rdb.Close()
		})
	}
	t.Cleanup(func() {
		conn.Close()
		stop()
	})
	return conn, lis.Addr().String(), stop
}

// edge is one running edge.
type edge struct {
	url  string // ws://host:port
	cfg  edgeserver.Config
	stop func() // graceful stop; waits for Serve to return
	done chan error
}

// edgeConfig is the edge configuration of tests: generous limits, quick timeouts.
func (b *backend) edgeConfig(t *testing.T, id string) edgeserver.Config {
	t.Helper()
	c, err := edgeserver.ConfigFromArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.EdgeID = id
	c.AuthAddr, c.RoomAddr, c.PresenceAddr = b.addrs.auth, b.addrs.room, b.addrs.presence
	c.Redis = b.cfg.room.Redis
	c.Redis.KeyPrefix = b.prefix + "edge:"
	c.RoomKeyPrefix = b.cfg.room.Redis.KeyPrefix
	c.CallTimeout = 5 * time.Second // argon2 under the race detector, with tests in parallel, is slow
	c.ShutdownTimeout = 5 * time.Second
	c.Legacy = true
	c.HeartbeatInterval = 200 * time.Millisecond
	c.ConnRate, c.ConnBurst, c.UserRate, c.UserBurst = 1000, 1000, 2000, 2000
	return c
}

// startEdge runs an edge in this process until the test ends.
func (b *backend) startEdge(t *testing.T, id string, edit func(*edgeserver.Config)) *edge {
	t.Helper()
	cfg := b.edgeConfig(t, id)
	if edit != nil {
		edit(&cfg)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redisCfg := cfg.Redis
	redisCfg.ClientName = "chat-" + id
	rdb, err := platform.NewRedis(redisCfg)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(addr string) *grpc.ClientConn {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ac, rc, pc := dial(cfg.AuthAddr), dial(cfg.RoomAddr), dial(cfg.PresenceAddr)
	srv := edgeserver.New(cfg, servertest.Logger(), edgeserver.Deps{
		Auth: authv1.NewAuthServiceClient(ac), Room: roomv1.NewRoomServiceClient(rc),
		Presence: presencev1.NewPresenceServiceClient(pc), Redis: rdb,
	})
	ctx, cancel := context.WithCancel(context.Background())
	e := &edge{url: "ws://" + lis.Addr().String(), cfg: cfg, done: make(chan error, 1)}
	go func() { e.done <- srv.Serve(ctx, lis) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-e.done:
				if err != nil {
					t.Errorf("edge serve: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("edge did not stop within 15s")
			}
			rdb.Close()
			ac.Close()
			rc.Close()
			pc.Close()
		})
	}
	t.Cleanup(e.stop)
	// Wait for the first heartbeat, so binds succeed.
	waitFor(t, "the edge's lease", func() bool {
		return b.rdb.ZScore(servertest.Ctx(t), b.cfg.presence.Redis.KeyPrefix+"leases", id).Err() == nil
	})
	return e
}

// wsClient is a test WebSocket client: replies are matched to commands by id; events and
// other frames queue in order.
type wsClient struct {
	t       testing.TB
	conn    *websocket.Conn
	nextID  int64
	mu      sync.Mutex
	replies map[int64]chan map[string]any
	frames  chan map[string]any // events (no id), and replies with id 0
	closed  chan struct{}
	// closeErr is how the connection ended (a *websocket.CloseError for a close frame).
	closeErr error
}

func dialWS(t testing.TB, url string, header http.Header) (*wsClient, error) {
	t.Helper()
	return dialWSWith(t, url, header, nil)
}

// dialWSWith is dialWS with setup run on the connection before reading starts.
func dialWSWith(t testing.TB, url string, header http.Header, setup func(*websocket.Conn)) (*wsClient, error) {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(url, header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	if setup != nil {
		setup(conn)
	}
	c := &wsClient{t: t, conn: conn, replies: map[int64]chan map[string]any{}, frames: make(chan map[string]any, 100000), closed: make(chan struct{})}
	go c.readLoop()
	t.Cleanup(func() { c.conn.Close(); <-c.closed })
	return c, nil
}

func connectWS(t testing.TB, e *edge) *wsClient {
	t.Helper()
	c, err := dialWS(t, e.url+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

func (c *wsClient) readLoop() {
	defer close(c.closed)
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			c.closeErr = err
			return
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			c.frames <- map[string]any{"raw": string(data)}
			continue
		}
		if id, ok := m["id"].(float64); ok && id != 0 {
			c.mu.Lock()
			ch := c.replies[int64(id)]
			c.mu.Unlock()
			if ch != nil {
				ch <- m
				continue
			}
		}
		c.frames <- m
	}
}

// call sends a command and waits for its reply.
func (c *wsClient) call(typ string, fields map[string]any) map[string]any {
	c.t.Helper()
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan map[string]any, 1)
	c.replies[id] = ch
	c.mu.Unlock()
	msg := map[string]any{"id": id, "type": typ}
	for k, v := range fields {
		msg[k] = v
	}
	if err := c.conn.WriteJSON(msg); err != nil {
		c.t.Fatalf("send %s: %v", typ, err)
	}
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no reply to %s within 10s", typ)
		return nil
	}
}

// ok calls and fails the test unless the reply is ok; it returns the reply's data.
func (c *wsClient) ok(typ string, fields map[string]any) map[string]any {
	c.t.Helper()
	r := c.call(typ, fields)
	if r["ok"] != true {
		c.t.Fatalf("%s %v: %v", typ, fields, r)
	}
	d, _ := r["data"].(map[string]any)
	return d
}

// fails calls and returns the error code of the reply (failing the test if it is ok).
func (c *wsClient) fails(typ string, fields map[string]any) string {
	c.t.Helper()
	r := c.call(typ, fields)
	e, _ := r["error"].(map[string]any)
	if r["ok"] != false || e == nil {
		c.t.Fatalf("%s %v succeeded: %v", typ, fields, r)
	}
	code, _ := e["code"].(string)
	return code
}

// next returns the next event or unmatched frame within 10s.
func (c *wsClient) next() map[string]any {
	c.t.Helper()
	select {
	case m := <-c.frames:
		return m
	case <-time.After(10 * time.Second):
		c.t.Fatal("no frame within 10s")
		return nil
	}
}

// nextOf skips frames until one of type typ.
func (c *wsClient) nextOf(typ string) map[string]any {
	c.t.Helper()
	for {
		if m := c.next(); m["type"] == typ {
			return m
		}
	}
}

// quiet fails the test if a frame arrives within d.
func (c *wsClient) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.frames:
		c.t.Fatalf("unexpected frame %v", m)
	case <-time.After(d):
	}
}

// closeCode waits for the connection to end and returns the close code the edge sent (0 when
// it ended without a close frame).
func (c *wsClient) closeCode() int {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		c.t.Fatal("connection still open after 10s")
	}
	if ce, ok := c.closeErr.(*websocket.CloseError); ok {
		return ce.Code
	}
	return 0
}

// user registers (and so logs in) a fresh user on a new connection.
func (b *backend) user(t testing.TB, e *edge, name string) *wsClient {
	t.Helper()
	c := connectWS(t, e)
	c.ok("register", map[string]any{"username": name, "password": "password-" + name})
	return c
}
