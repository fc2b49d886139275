package presenceserver

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/platform/redistest"
	"github.com/chatrt/chat/platform/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(redistest.DialRetrier))
}

type harness struct {
	client presencev1.PresenceServiceClient
	svc    *Service
	rdb    *redis.Client
	prefix string
	cfg    Config
}

func testConfig(prefix string) Config {
	return Config{
		Config:            servertest.Config(prefix),
		LeaseTTL:          15 * time.Second,
		HeartbeatInterval: 5 * time.Second,
		SweepInterval:     time.Hour, // tests sweep by hand unless they say otherwise
		StreamMaxLen:      100000,
		LastSeenRetention: time.Hour,
		UnbindClaim:       5 * time.Second,
	}
}

// start serves presence on its own key prefix. The sweeper runs only when the test sets a
// SweepInterval shorter than an hour.
func start(t testing.TB, edit func(*Config)) *harness {
	t.Helper()
	probe := redistest.Client(t)
	prefix := redistest.Prefix(t, probe)
	cfg := testConfig(prefix)
	if edit != nil {
		edit(&cfg)
	}
	rdb := servertest.Redis(t, cfg.Redis)
	svc := NewService(servertest.Logger(), cfg, rdb)
	srv := servertest.Serve(t, cfg.Config, rdb, func(s *platform.Server) { s.Register(&presencev1.PresenceService_ServiceDesc, svc) })
	if cfg.SweepInterval < time.Hour {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); svc.RunSweeper(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return &harness{client: presencev1.NewPresenceServiceClient(srv.Conn), svc: svc, rdb: probe, prefix: prefix, cfg: cfg}
}

func (h *harness) heartbeat(t testing.TB, edge string) *presencev1.HeartbeatResponse {
	t.Helper()
	resp, err := h.client.Heartbeat(servertest.Ctx(t), &presencev1.HeartbeatRequest{EdgeId: edge})
	if err != nil {
		t.Fatalf("heartbeat %s: %v", edge, err)
	}
	return resp
}

func (h *harness) bind(t testing.TB, conn, user, edge string) *presencev1.BindResponse {
	t.Helper()
	resp, err := h.client.Bind(servertest.Ctx(t), &presencev1.BindRequest{ConnId: conn, UserId: user, Username: "name-" + user, EdgeId: edge})
	if err != nil {
		t.Fatalf("bind %s: %v", conn, err)
	}
	return resp
}

func (h *harness) unbind(t testing.TB, conn string) *presencev1.UnbindResponse {
	t.Helper()
	resp, err := h.client.Unbind(servertest.Ctx(t), &presencev1.UnbindRequest{ConnId: conn})
	if err != nil {
		t.Fatalf("unbind %s: %v", conn, err)
	}
	return resp
}

func (h *harness) status(t testing.TB, users ...string) []*presencev1.UserStatus {
	t.Helper()
	resp, err := h.client.OnlineStatus(servertest.Ctx(t), &presencev1.OnlineStatusRequest{UserIds: users})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetStatuses()
}

// events reads the whole event stream.
func (h *harness) events(t testing.TB) []*presencev1.PresenceEvent {
	t.Helper()
	msgs, err := h.rdb.XRange(servertest.Ctx(t), h.prefix+"events", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*presencev1.PresenceEvent, 0, len(msgs))
	for _, m := range msgs {
		raw, _ := m.Values[eventField].(string)
		ev := &presencev1.PresenceEvent{}
		if err := proto.Unmarshal([]byte(raw), ev); err != nil {
			t.Fatalf("entry %s: %v", m.ID, err)
		}
		out = append(out, ev)
	}
	return out
}

// brief renders an event as "KIND user conn vN reason", for comparisons.
func brief(ev *presencev1.PresenceEvent) string {
	kind := strings.TrimPrefix(ev.GetKind().String(), "PRESENCE_EVENT_KIND_")
	s := fmt.Sprintf("%s %s %s v%d", kind, ev.GetUserId(), ev.GetConnId(), ev.GetVersion())
	if r := ev.GetReason(); r != presencev1.UnbindReason_UNBIND_REASON_UNSPECIFIED {
		s += " " + strings.TrimPrefix(r.String(), "UNBIND_REASON_")
	}
	return s
}

func briefs(evs []*presencev1.PresenceEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = brief(ev)
	}
	return out
}

func equalLines(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestBindUnbindStatusAndEvents(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	hb := h.heartbeat(t, "edge-a")
	if !hb.GetLeaseCreated() || hb.GetIntervalMs() != 5000 {
		t.Fatalf("first heartbeat %+v, want a new lease and a 5000ms interval", hb)
	}
	if d := time.Until(hb.GetExpiresAt().AsTime()); d < 14*time.Second || d > 15*time.Second {
		t.Fatalf("lease expires in %v, want the 15s TTL", d)
	}
	if h.heartbeat(t, "edge-a").GetLeaseCreated() {
		t.Fatal("a renewal reported a new lease")
	}
	h.heartbeat(t, "edge-b")

	if r := h.bind(t, "a-1", "u1", "edge-a"); !r.GetUserCameOnline() || r.GetVersion() != 1 {
		t.Fatalf("first bind %+v", r)
	}
	if r := h.bind(t, "b-1", "u1", "edge-b"); r.GetUserCameOnline() || r.GetVersion() != 2 {
		t.Fatalf("second bind %+v", r)
	}
	// The same binding again is a no-op.
	if r := h.bind(t, "b-1", "u1", "edge-b"); r.GetUserCameOnline() || r.GetVersion() != 2 {
		t.Fatalf("repeated bind %+v", r)
	}
	h.bind(t, "a-2", "u2", "edge-a")

	conns, err := h.client.UserConnections(servertest.Ctx(t), &presencev1.UserConnectionsRequest{UserId: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range conns.GetConnections() {
		got = append(got, c.GetConnId()+"@"+c.GetEdgeId())
	}
	equalLines(t, got, []string{"a-1@edge-a", "b-1@edge-b"})

	st := h.status(t, "u1", "u2", "u3")
	if !st[0].GetOnline() || st[0].GetConnections() != 2 || st[0].GetLastSeen() == nil ||
		!st[1].GetOnline() || st[1].GetConnections() != 1 ||
		st[2].GetOnline() || st[2].GetConnections() != 0 || st[2].GetLastSeen() != nil || st[2].GetUserId() != "u3" {
		t.Fatalf("status %v", st)
	}

	if r := h.unbind(t, "a-1"); !r.GetUnbound() || r.GetUserWentOffline() {
		t.Fatalf("unbind a-1 %+v", r)
	}
	if r := h.unbind(t, "a-1"); r.GetUnbound() {
		t.Fatalf("repeated unbind %+v", r)
	}
	before := time.Now()
	if r := h.unbind(t, "b-1"); !r.GetUnbound() || !r.GetUserWentOffline() {
		t.Fatalf("unbind b-1 %+v", r)
	}
	st = h.status(t, "u1")
	if st[0].GetOnline() || st[0].GetConnections() != 0 || st[0].GetLastSeen().AsTime().Before(before.Add(-time.Second)) {
		t.Fatalf("status after last unbind %v", st)
	}

	equalLines(t, briefs(h.events(t)), []string{
		"CONNECTION_BOUND u1 a-1 v1",
		"USER_ONLINE u1 a-1 v1",
		"CONNECTION_BOUND u1 b-1 v2",
		"CONNECTION_BOUND u2 a-2 v1",
		"USER_ONLINE u2 a-2 v1",
		"CONNECTION_UNBOUND u1 a-1 v3 CLOSED",
		"CONNECTION_UNBOUND u1 b-1 v4 CLOSED",
		"USER_OFFLINE u1 b-1 v4 CLOSED",
	})
	// Events carry the username and edge.
	if ev := h.events(t)[0]; ev.GetUsername() != "name-u1" || ev.GetEdgeId() != "edge-a" || ev.GetTime() == nil {
		t.Fatalf("event %v", ev)
	}
}

func TestBindRefusals(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	_, err := h.client.Bind(servertest.Ctx(t), &presencev1.BindRequest{ConnId: "c1", UserId: "u1", Username: "n", EdgeId: "nolease"})
	servertest.WantCode(t, err, codes.FailedPrecondition)

	h.heartbeat(t, "e1")
	h.heartbeat(t, "e2")
	h.bind(t, "c1", "u1", "e1")
	for _, tc := range []struct {
		name string
		req  *presencev1.BindRequest
		want codes.Code
	}{
		{"conn id of another user", &presencev1.BindRequest{ConnId: "c1", UserId: "u2", Username: "n", EdgeId: "e1"}, codes.FailedPrecondition},
		{"conn id on another edge", &presencev1.BindRequest{ConnId: "c1", UserId: "u1", Username: "n", EdgeId: "e2"}, codes.FailedPrecondition},
		{"brace in conn id", &presencev1.BindRequest{ConnId: "c{1}", UserId: "u1", Username: "n", EdgeId: "e1"}, codes.InvalidArgument},
		{"space in user id", &presencev1.BindRequest{ConnId: "c2", UserId: "u 1", Username: "n", EdgeId: "e1"}, codes.InvalidArgument},
		{"no username", &presencev1.BindRequest{ConnId: "c2", UserId: "u1", EdgeId: "e1"}, codes.InvalidArgument},
		{"long edge id", &presencev1.BindRequest{ConnId: "c2", UserId: "u1", Username: "n", EdgeId: strings.Repeat("e", 65)}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.Bind(servertest.Ctx(t), tc.req)
			servertest.WantCode(t, err, tc.want)
		})
	}
	// The refused binds changed nothing.
	conns, err := h.client.UserConnections(servertest.Ctx(t), &presencev1.UserConnectionsRequest{UserId: "u1"})
	if err != nil || len(conns.GetConnections()) != 1 || conns.GetConnections()[0].GetEdgeId() != "e1" {
		t.Fatalf("connections of u1: %v %v", conns, err)
	}
	if st := h.status(t, "u2"); st[0].GetOnline() {
		t.Fatal("a refused bind made u2 online")
	}
	if m := h.rdb.HGetAll(servertest.Ctx(t), h.prefix+"edge:{e2}:conns").Val(); len(m) != 0 {
		t.Fatalf("a refused bind left %v in e2's index", m)
	}

	for _, tc := range []struct {
		name string
		n    int
	}{{"no users", 0}, {"too many users", 1001}} {
		t.Run(tc.name, func(t *testing.T) {
			ids := make([]string, tc.n)
			for i := range ids {
				ids[i] = fmt.Sprint("u", i)
			}
			_, err := h.client.OnlineStatus(servertest.Ctx(t), &presencev1.OnlineStatusRequest{UserIds: ids})
			servertest.WantCode(t, err, codes.InvalidArgument)
		})
	}
	_, err = h.client.Unbind(servertest.Ctx(t), &presencev1.UnbindRequest{})
	servertest.WantCode(t, err, codes.InvalidArgument)
	_, err = h.client.Heartbeat(servertest.Ctx(t), &presencev1.HeartbeatRequest{EdgeId: "{x}"})
	servertest.WantCode(t, err, codes.InvalidArgument)
}

func TestLeaseExpiryUnbindsEdgeConnections(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) {
		c.LeaseTTL = 400 * time.Millisecond
		c.SweepInterval = 100 * time.Millisecond
	})
	h.heartbeat(t, "dying")
	h.heartbeat(t, "alive")
	h.bind(t, "d-1", "u1", "dying")
	h.bind(t, "d-2", "u2", "dying")
	h.bind(t, "a-1", "u2", "alive")

	// Keep "alive" heartbeating; "dying" stops.
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.heartbeat(t, "alive")
		st := h.status(t, "u1", "u2")
		if !st[0].GetOnline() && st[1].GetConnections() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dying edge's connections still bound after 5s: %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	conns, err := h.client.UserConnections(servertest.Ctx(t), &presencev1.UserConnectionsRequest{UserId: "u2"})
	if err != nil || len(conns.GetConnections()) != 1 || conns.GetConnections()[0].GetConnId() != "a-1" {
		t.Fatalf("u2 connections %v %v", conns, err)
	}
	var unbound []string
	for _, ev := range h.events(t) {
		if ev.GetKind() == presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_UNBOUND {
			unbound = append(unbound, brief(ev))
		}
	}
	sort.Strings(unbound)
	equalLines(t, unbound, []string{"CONNECTION_UNBOUND u1 d-1 v2 LEASE_EXPIRED", "CONNECTION_UNBOUND u2 d-2 v3 LEASE_EXPIRED"})

	// Nothing of the dead connections is left in any key (the event log aside).
	ctx := servertest.Ctx(t)
	for _, k := range redistest.Keys(t, ctx, h.rdb, h.prefix) {
		if k == h.prefix+"events" {
			continue
		}
		if strings.Contains(k, "d-1") || strings.Contains(k, "d-2") || strings.Contains(k, "{dying}") {
			t.Errorf("key %s is left", k)
		}
		dump := fmt.Sprint(h.rdb.HGetAll(ctx, k).Val())
		if h.rdb.Type(ctx, k).Val() == "zset" {
			dump = fmt.Sprint(h.rdb.ZRange(ctx, k, 0, -1).Val())
			if strings.Contains(dump, "dying") {
				// The lapsed lease is kept for one more TTL, then removed.
				continue
			}
		}
		if strings.Contains(dump, "d-1") || strings.Contains(dump, "d-2") {
			t.Errorf("key %s still mentions a dead connection: %s", k, dump)
		}
	}
	// After the grace TTL the lapsed lease itself is gone, and a heartbeat makes a new one.
	deadline = time.Now().Add(5 * time.Second)
	for h.rdb.ZScore(ctx, h.prefix+"leases", "dying").Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("lapsed lease not removed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !h.heartbeat(t, "dying").GetLeaseCreated() {
		t.Fatal("heartbeat after lapse did not report a new lease")
	}
}

func TestHeartbeatAfterLapseReportsNewLease(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.LeaseTTL = 100 * time.Millisecond })
	h.heartbeat(t, "e")
	time.Sleep(150 * time.Millisecond)
	// Lapsed but not yet swept: still a new lease for the edge.
	if !h.heartbeat(t, "e").GetLeaseCreated() {
		t.Fatal("renewing a lapsed lease did not report lease_created")
	}
}

func TestReleaseEdge(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.heartbeat(t, "e")
	h.bind(t, "e-1", "u1", "e")
	h.bind(t, "e-2", "u1", "e")
	resp, err := h.client.ReleaseEdge(servertest.Ctx(t), &presencev1.ReleaseEdgeRequest{EdgeId: "e"})
	if err != nil || resp.GetUnbound() != 2 {
		t.Fatalf("release: %v %v", resp, err)
	}
	if st := h.status(t, "u1"); st[0].GetOnline() {
		t.Fatal("u1 online after its edge was released")
	}
	_, err = h.client.Bind(servertest.Ctx(t), &presencev1.BindRequest{ConnId: "e-3", UserId: "u1", Username: "n", EdgeId: "e"})
	servertest.WantCode(t, err, codes.FailedPrecondition)
	for _, ev := range h.events(t)[3:] {
		if ev.GetReason() != presencev1.UnbindReason_UNBIND_REASON_EDGE_RELEASED {
			t.Fatalf("event %s, want reason EDGE_RELEASED", brief(ev))
		}
	}
}

// TestConcurrentSweepersAppendEachEventOnce runs three presence replicas' sweeps at once.
func TestConcurrentSweepersAppendEachEventOnce(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.heartbeat(t, "e")
	const n = 60
	for i := range n {
		h.bind(t, fmt.Sprint("c", i), fmt.Sprint("u", i%7), "e")
	}
	if err := h.svc.store.lapseLease(servertest.Ctx(t), "e"); err != nil {
		t.Fatal(err)
	}
	replicas := []*Service{h.svc, NewService(servertest.Logger(), h.cfg, h.svc.store.rdb), NewService(servertest.Logger(), h.cfg, h.svc.store.rdb)}
	var wg sync.WaitGroup
	for _, r := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Sweep(servertest.Ctx(t)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	offline := map[string]int{}
	for _, ev := range h.events(t) {
		switch ev.GetKind() {
		case presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_UNBOUND:
			seen[ev.GetConnId()]++
		case presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_USER_OFFLINE:
			offline[ev.GetUserId()]++
		}
	}
	if len(seen) != n || len(offline) != 7 {
		t.Fatalf("%d connections unbound (want %d), %d users offline (want 7)", len(seen), n, len(offline))
	}
	for c, k := range seen {
		if k != 1 {
			t.Fatalf("connection %s unbound %d times", c, k)
		}
	}
	for u, k := range offline {
		if k != 1 {
			t.Fatalf("user %s went offline %d times", u, k)
		}
	}
}

// TestUnbindRetryAppendsLostEvents simulates a presence replica that died between changing the
// user's state and appending the events: the next Unbind appends them, exactly once.
func TestUnbindRetryAppendsLostEvents(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.UnbindClaim = 100 * time.Millisecond })
	h.heartbeat(t, "e")
	h.bind(t, "c1", "u1", "e")
	ctx := servertest.Ctx(t)
	// The dead replica's half of the work.
	ch, err := h.svc.store.unbindUser(ctx, "u1", "c1", time.Now(), presencev1.UnbindReason_UNBIND_REASON_CLOSED, h.cfg.UnbindClaim, h.cfg.LastSeenRetention)
	if err != nil || !ch.Changed || !ch.Flipped {
		t.Fatalf("half unbind: %+v %v", ch, err)
	}
	// Within the claim, a retry leaves the events to their claimant.
	if r := h.unbind(t, "c1"); r.GetUnbound() {
		t.Fatalf("retry within the claim: %+v", r)
	}
	time.Sleep(150 * time.Millisecond)
	if r := h.unbind(t, "c1"); !r.GetUnbound() || !r.GetUserWentOffline() {
		t.Fatalf("retry after the claim: %+v", r)
	}
	h.unbind(t, "c1")
	equalLines(t, briefs(h.events(t)), []string{
		"CONNECTION_BOUND u1 c1 v1",
		"USER_ONLINE u1 c1 v1",
		"CONNECTION_UNBOUND u1 c1 v2 CLOSED",
		"USER_OFFLINE u1 c1 v2 CLOSED",
	})
	if k := redistest.Keys(t, ctx, h.rdb, h.prefix+"conn:"); len(k) != 0 {
		t.Fatalf("connection record left: %v", k)
	}
	if tomb := h.rdb.HGet(ctx, h.prefix+"user:{u1}:meta", "t:c1").Val(); tomb != "" {
		t.Fatalf("tombstone left: %q", tomb)
	}
}

// TestConcurrentBindsKeepEventOrderPerUser binds and unbinds one user's connections from many
// goroutines: the versions in the stream are exactly 1..N, each once, and applying the
// events in version order (as a consumer must) gives the final state.
func TestConcurrentBindsKeepEventOrderPerUser(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.heartbeat(t, "e")
	const workers, rounds = 20, 5
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				conn := fmt.Sprintf("w%d-r%d", w, r)
				h.bind(t, conn, "busy", "e")
				if r%2 == 0 || w%3 == 0 {
					h.unbind(t, conn)
				}
			}
		}()
	}
	wg.Wait()

	evs := h.events(t)
	byVersion := map[uint64][]*presencev1.PresenceEvent{}
	var maxV uint64
	for _, ev := range evs {
		byVersion[ev.GetVersion()] = append(byVersion[ev.GetVersion()], ev)
		maxV = max(maxV, ev.GetVersion())
	}
	online := false
	live := map[string]bool{}
	for v := uint64(1); v <= maxV; v++ {
		group := byVersion[v]
		conn := 0
		for _, ev := range group {
			switch ev.GetKind() {
			case presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_BOUND:
				conn++
				live[ev.GetConnId()] = true
			case presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_UNBOUND:
				conn++
				delete(live, ev.GetConnId())
			case presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_USER_ONLINE:
				if online {
					t.Fatalf("v%d: online twice in a row", v)
				}
				online = true
			case presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_USER_OFFLINE:
				if !online {
					t.Fatalf("v%d: offline twice in a row", v)
				}
				online = false
			}
		}
		if conn != 1 {
			t.Fatalf("version %d has %d connection events, want 1: %v", v, conn, briefs(group))
		}
		if online != (len(live) > 0) {
			t.Fatalf("after v%d: online=%v with %d live connections", v, online, len(live))
		}
	}
	if want := uint64(workers*rounds) + uint64(len(evs)-2*len(byVersion)); maxV == 0 || len(byVersion) != int(maxV) {
		t.Fatalf("versions 1..%d with %d distinct (want contiguous; %d)", maxV, len(byVersion), want)
	}
	conns, err := h.client.UserConnections(servertest.Ctx(t), &presencev1.UserConnectionsRequest{UserId: "busy"})
	if err != nil {
		t.Fatal(err)
	}
	if len(conns.GetConnections()) != len(live) {
		t.Fatalf("%d live connections, events say %d", len(conns.GetConnections()), len(live))
	}
	for _, c := range conns.GetConnections() {
		if !live[c.GetConnId()] {
			t.Fatalf("connection %s is bound but the events say it is not", c.GetConnId())
		}
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.Redis.Addrs = servertest.DeadAddr(t); c.Redis.Timeout = 200 * time.Millisecond })
	calls := map[string]func(context.Context) error{
		"Bind": func(ctx context.Context) error {
			_, err := h.client.Bind(ctx, &presencev1.BindRequest{ConnId: "c", UserId: "u", Username: "n", EdgeId: "e"})
			return err
		},
		"Unbind": func(ctx context.Context) error {
			_, err := h.client.Unbind(ctx, &presencev1.UnbindRequest{ConnId: "c"})
			return err
		},
		"Heartbeat": func(ctx context.Context) error {
			_, err := h.client.Heartbeat(ctx, &presencev1.HeartbeatRequest{EdgeId: "e"})
			return err
		},
		"ReleaseEdge": func(ctx context.Context) error {
			_, err := h.client.ReleaseEdge(ctx, &presencev1.ReleaseEdgeRequest{EdgeId: "e"})
			return err
		},
		"UserConnections": func(ctx context.Context) error {
			_, err := h.client.UserConnections(ctx, &presencev1.UserConnectionsRequest{UserId: "u"})
			return err
		},
		"OnlineStatus": func(ctx context.Context) error {
			_, err := h.client.OnlineStatus(ctx, &presencev1.OnlineStatusRequest{UserIds: []string{"u"}})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) { servertest.WantCode(t, call(servertest.Ctx(t)), codes.Unavailable) })
	}
}

// TestBindAndUnbindBatches: each item of a batch is answered as its unary call would be, a bad
// item fails alone, and a refused bind leaves nothing behind.
func TestBindAndUnbindBatches(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.heartbeat(t, "e")
	h.bind(t, "c0", "u0", "e")
	req := func(conn, user, edge string) *presencev1.BindRequest {
		return &presencev1.BindRequest{ConnId: conn, UserId: user, Username: "name-" + user, EdgeId: edge}
	}
	resp, err := h.client.BindBatch(servertest.Ctx(t), &presencev1.BindBatchRequest{Binds: []*presencev1.BindRequest{
		req("c1", "u1", "e"), req("c0", "u9", "e"), req("c{2}", "u2", "e"), req("c3", "u3", "nolease"), req("c4", "u1", "e"), req("c0", "u0", "e"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.GetResults() {
		got = append(got, fmt.Sprintf("%s online=%v v%d", codes.Code(r.GetCode()), r.GetResponse().GetUserCameOnline(), r.GetResponse().GetVersion()))
	}
	equalLines(t, got, []string{
		"OK online=true v1", "FailedPrecondition online=false v0", "InvalidArgument online=false v0",
		"FailedPrecondition online=false v0", "OK online=false v2", "OK online=false v1",
	})
	ctx := servertest.Ctx(t)
	for _, p := range []string{"edge:{nolease}", "conn:{c3}", "conn:{c{2}}"} {
		if k := redistest.Keys(t, ctx, h.rdb, h.prefix+p); len(k) != 0 {
			t.Fatalf("a refused bind left %v", k)
		}
	}

	un, err := h.client.UnbindBatch(ctx, &presencev1.UnbindBatchRequest{ConnIds: []string{"c1", "c{x}", "c0", "never", "c4", "c1"}})
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, r := range un.GetResults() {
		got = append(got, fmt.Sprintf("%s unbound=%v offline=%v", codes.Code(r.GetCode()), r.GetResponse().GetUnbound(), r.GetResponse().GetUserWentOffline()))
	}
	// The same connection twice in one batch: the second finds it gone (or being finished).
	equalLines(t, got, []string{
		"OK unbound=true offline=false", "InvalidArgument unbound=false offline=false", "OK unbound=true offline=true",
		"OK unbound=false offline=false", "OK unbound=true offline=true", "OK unbound=false offline=false",
	})
	equalLines(t, briefs(h.events(t)), []string{
		"CONNECTION_BOUND u0 c0 v1", "USER_ONLINE u0 c0 v1",
		"CONNECTION_BOUND u1 c1 v1", "USER_ONLINE u1 c1 v1", "CONNECTION_BOUND u1 c4 v2",
		"CONNECTION_UNBOUND u1 c1 v3 CLOSED", "CONNECTION_UNBOUND u0 c0 v2 CLOSED", "USER_OFFLINE u0 c0 v2 CLOSED",
		"CONNECTION_UNBOUND u1 c4 v4 CLOSED", "USER_OFFLINE u1 c4 v4 CLOSED",
	})
	for _, p := range []string{"conn:", "edge:"} {
		if k := redistest.Keys(t, ctx, h.rdb, h.prefix+p); len(k) != 0 {
			t.Fatalf("left behind: %v", k)
		}
	}
}
