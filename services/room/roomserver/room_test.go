package roomserver

import (
	"context"
	"encoding/base64"
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
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/platform/redistest"
	"github.com/chatrt/chat/platform/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(redistest.DialRetrier))
}

type harness struct {
	client roomv1.RoomServiceClient
	svc    *Service
	rdb    *redis.Client
	prefix string
	cfg    Config
}

func testConfig(prefix string) Config {
	return Config{
		Config:           servertest.Config(prefix + "room:"),
		HistoryCap:       1000,
		HistoryIdleTTL:   time.Hour,
		DedupWindow:      5 * time.Minute,
		PresenceEvents:   prefix + "presence:events",
		CleanupGroup:     "room-cleanup",
		CleanupClaimIdle: 30 * time.Second,
	}
}

// start serves the room service, with its ghost cleanup, on a key prefix of its own.
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
	srv := servertest.Serve(t, cfg.Config, rdb, func(s *platform.Server) {
		s.Register(&roomv1.RoomService_ServiceDesc, svc)
		s.AddWorker(svc.RunCleanup)
	})
	return &harness{client: roomv1.NewRoomServiceClient(srv.Conn), svc: svc, rdb: probe, prefix: prefix, cfg: cfg}
}

func (h *harness) join(t testing.TB, room, conn, user string) *roomv1.JoinResponse {
	t.Helper()
	resp, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: room, ConnId: conn, UserId: user, Username: "name-" + user})
	if err != nil {
		t.Fatalf("join %s %s: %v", room, conn, err)
	}
	return resp
}

func (h *harness) leave(t testing.TB, room, conn string) *roomv1.LeaveResponse {
	t.Helper()
	resp, err := h.client.Leave(servertest.Ctx(t), &roomv1.LeaveRequest{Room: room, ConnId: conn})
	if err != nil {
		t.Fatalf("leave %s %s: %v", room, conn, err)
	}
	return resp
}

func (h *harness) publish(t testing.TB, room, conn, user, text, cmid string) *roomv1.PublishResponse {
	t.Helper()
	resp, err := h.client.Publish(servertest.Ctx(t), &roomv1.PublishRequest{Room: room, ConnId: conn, UserId: user, Username: "name-" + user, Text: text, ClientMsgId: cmid})
	if err != nil {
		t.Fatalf("publish to %s: %v", room, err)
	}
	return resp
}

func (h *harness) members(t testing.TB, room string) []string {
	t.Helper()
	resp, err := h.client.Members(servertest.Ctx(t), &roomv1.MembersRequest{Room: room})
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, m := range resp.GetMembers() {
		out = append(out, fmt.Sprintf("%s(%s)x%d", m.GetUserId(), m.GetUsername(), m.GetConnections()))
	}
	if int(resp.GetMemberCount()) != len(out) {
		t.Fatalf("member_count %d but %d members listed", resp.GetMemberCount(), len(out))
	}
	return out
}

// events subscribes to a room's channel and returns a function that waits for the next n
// events, rendered briefly.
func (h *harness) events(t testing.TB, room string) func(n int) []string {
	t.Helper()
	sub := h.rdb.Subscribe(context.Background(), roomv1.EventChannel(h.cfg.Redis.KeyPrefix, room))
	if _, err := sub.Receive(servertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	ch := sub.Channel()
	return func(n int) []string {
		t.Helper()
		var out []string
		timeout := time.After(5 * time.Second)
		for len(out) < n {
			select {
			case m := <-ch:
				var ev roomv1.RoomEvent
				if err := proto.Unmarshal([]byte(m.Payload), &ev); err != nil {
					t.Fatalf("undecodable event: %v", err)
				}
				out = append(out, brief(&ev))
			case <-timeout:
				t.Fatalf("got %d events %v, want %d", len(out), out, n)
			}
		}
		return out
	}
}

func brief(ev *roomv1.RoomEvent) string {
	switch e := ev.GetEvent().(type) {
	case *roomv1.RoomEvent_Message:
		m := e.Message
		return fmt.Sprintf("message %s #%d %s(%s): %s", m.GetRoom(), m.GetSeq(), m.GetUserId(), m.GetUsername(), m.GetText())
	case *roomv1.RoomEvent_Joined:
		return fmt.Sprintf("joined %s %s(%s)", e.Joined.GetRoom(), e.Joined.GetUserId(), e.Joined.GetUsername())
	case *roomv1.RoomEvent_Left:
		return fmt.Sprintf("left %s %s(%s)", e.Left.GetRoom(), e.Left.GetUserId(), e.Left.GetUsername())
	}
	return "?"
}

func equalLines(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestMembershipIsPerConnection(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	next := h.events(t, "lobby")

	r := h.join(t, "lobby", "c1", "alice")
	if !r.GetUserJoined() || r.GetMemberCount() != 1 || r.GetLastSeq() != 0 || r.GetEpoch() != "" {
		t.Fatalf("first join %+v", r)
	}
	// A second tab of alice: no new member, no event.
	if r := h.join(t, "lobby", "c2", "alice"); r.GetUserJoined() || r.GetMemberCount() != 1 {
		t.Fatalf("second tab %+v", r)
	}
	// Joining again with the same connection is a no-op.
	if r := h.join(t, "lobby", "c2", "alice"); r.GetUserJoined() || r.GetMemberCount() != 1 {
		t.Fatalf("repeated join %+v", r)
	}
	r = h.join(t, "lobby", "c3", "bob")
	if !r.GetUserJoined() || r.GetMemberCount() != 2 || len(r.GetMembers()) != 2 {
		t.Fatalf("bob's join %+v", r)
	}
	equalLines(t, h.members(t, "lobby"), []string{"alice(name-alice)x2", "bob(name-bob)x1"})

	// The connection cannot be in the room as someone else.
	_, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: "lobby", ConnId: "c3", UserId: "mallory", Username: "m"})
	servertest.WantCode(t, err, codes.FailedPrecondition)

	if r := h.leave(t, "lobby", "c1"); !r.GetWasMember() || r.GetUserLeft() {
		t.Fatalf("leaving one tab %+v", r)
	}
	if r := h.leave(t, "lobby", "c1"); r.GetWasMember() {
		t.Fatalf("repeated leave %+v", r)
	}
	if r := h.leave(t, "lobby", "c2"); !r.GetWasMember() || !r.GetUserLeft() {
		t.Fatalf("leaving the last tab %+v", r)
	}
	equalLines(t, h.members(t, "lobby"), []string{"bob(name-bob)x1"})
	h.leave(t, "lobby", "c3")
	equalLines(t, h.members(t, "lobby"), []string{})

	equalLines(t, next(4), []string{
		"joined lobby alice(name-alice)",
		"joined lobby bob(name-bob)",
		"left lobby alice(name-alice)",
		"left lobby bob(name-bob)",
	})
	// An empty room leaves no membership keys (and it had no messages, so no other keys).
	if keys := redistest.Keys(t, servertest.Ctx(t), h.rdb, h.cfg.Redis.KeyPrefix); len(keys) != 0 {
		t.Fatalf("keys left after everyone left: %v", keys)
	}
}

func TestMemberLimits(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	for i := range 5 {
		h.join(t, "big", fmt.Sprint("c", i), fmt.Sprint("u", i))
	}
	r, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: "big", ConnId: "c9", UserId: "u9", Username: "n", MemberLimit: 3})
	if err != nil || r.GetMemberCount() != 6 || len(r.GetMembers()) != 3 || r.GetMembers()[0].GetUserId() != "u0" {
		t.Fatalf("join with limit 3: %v %v", r, err)
	}
	m, err := h.client.Members(servertest.Ctx(t), &roomv1.MembersRequest{Room: "big", Limit: 2})
	if err != nil || m.GetMemberCount() != 6 || len(m.GetMembers()) != 2 {
		t.Fatalf("members with limit 2: %v %v", m, err)
	}
}

// TestMemberEntriesKeepIdsAndNamesApart: members are stored as "<id> <name>"; ids that prefix
// one another, and names with spaces, must neither mix up listings nor leaves.
func TestMemberEntriesKeepIdsAndNamesApart(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	next := h.events(t, "r")
	for _, m := range []struct{ conn, user, name string }{
		{"c1", "u1", "Ann Lee"}, {"c2", "u1x", "u1 impostor"}, {"c3", "u", "  spaced  "}, {"c4", "u1!", "bang"},
	} {
		if _, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: "r", ConnId: m.conn, UserId: m.user, Username: m.name}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: "r", ConnId: "c5", UserId: "u1", Username: "Ann Lee"})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range r.GetMembers() {
		listed = append(listed, m.GetUserId()+"="+m.GetUsername())
	}
	equalLines(t, listed, []string{"u=  spaced  ", "u1=Ann Lee", "u1!=bang", "u1x=u1 impostor"})
	h.leave(t, "r", "c1")
	h.leave(t, "r", "c5")
	equalLines(t, h.members(t, "r"), []string{"u(  spaced  )x1", "u1!(bang)x1", "u1x(u1 impostor)x1"})
	h.leave(t, "r", "c3")
	h.leave(t, "r", "c4")
	equalLines(t, h.members(t, "r"), []string{"u1x(u1 impostor)x1"})
	equalLines(t, next(7), []string{
		"joined r u1(Ann Lee)", "joined r u1x(u1 impostor)", "joined r u(  spaced  )", "joined r u1!(bang)",
		"left r u1(Ann Lee)", "left r u(  spaced  )", "left r u1!(bang)",
	})
}
func TestPublishSequenceHistoryAndDedup(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.join(t, "r", "c1", "alice")
	h.join(t, "r", "c2", "bob")
	next := h.events(t, "r")

	_, err := h.client.Publish(servertest.Ctx(t), &roomv1.PublishRequest{Room: "r", ConnId: "c9", UserId: "alice", Username: "a", Text: "hi"})
	servertest.WantCode(t, err, codes.PermissionDenied)
	// A connection of bob cannot publish as alice.
	_, err = h.client.Publish(servertest.Ctx(t), &roomv1.PublishRequest{Room: "r", ConnId: "c2", UserId: "alice", Username: "a", Text: "hi"})
	servertest.WantCode(t, err, codes.PermissionDenied)
	_, err = h.client.Publish(servertest.Ctx(t), &roomv1.PublishRequest{Room: "elsewhere", ConnId: "c1", UserId: "alice", Username: "a", Text: "hi"})
	servertest.WantCode(t, err, codes.PermissionDenied)

	p1 := h.publish(t, "r", "c1", "alice", "one", "m-1")
	if p1.GetSeq() != 1 || p1.GetEpoch() == "" || p1.GetDuplicate() || p1.GetTs() == nil {
		t.Fatalf("first publish %+v", p1)
	}
	p2 := h.publish(t, "r", "c2", "bob", "two", "m-1") // same id, other user: not a duplicate
	if p2.GetSeq() != 2 || p2.GetEpoch() != p1.GetEpoch() {
		t.Fatalf("second publish %+v", p2)
	}
	again := h.publish(t, "r", "c1", "alice", "one (retry)", "m-1")
	if again.GetSeq() != 1 || !again.GetDuplicate() || again.GetEpoch() != p1.GetEpoch() || !again.GetTs().AsTime().Equal(p1.GetTs().AsTime().Truncate(time.Millisecond)) {
		t.Fatalf("repeated client_msg_id %+v", again)
	}
	h.publish(t, "r", "c1", "alice", "three", "")
	h.publish(t, "r", "c1", "alice", "four", "")
	equalLines(t, next(4), []string{
		"message r #1 alice(name-alice): one",
		"message r #2 bob(name-bob): two",
		"message r #3 alice(name-alice): three",
		"message r #4 alice(name-alice): four",
	})

	hist, err := h.client.History(servertest.Ctx(t), &roomv1.HistoryRequest{Room: "r"})
	if err != nil || hist.GetLastSeq() != 4 || hist.GetEpoch() != p1.GetEpoch() || len(hist.GetMessages()) != 4 {
		t.Fatalf("history %v %v", hist, err)
	}
	m := hist.GetMessages()[0]
	if m.GetSeq() != 1 || m.GetText() != "one" || m.GetClientMsgId() != "m-1" || m.GetEpoch() != p1.GetEpoch() || m.GetRoom() != "r" ||
		!m.GetTs().AsTime().Equal(p1.GetTs().AsTime()) {
		t.Fatalf("first history message %v", m)
	}
	page, err := h.client.History(servertest.Ctx(t), &roomv1.HistoryRequest{Room: "r", BeforeSeq: 4, Limit: 2})
	if err != nil || len(page.GetMessages()) != 2 || page.GetMessages()[0].GetSeq() != 2 || page.GetMessages()[1].GetSeq() != 3 {
		t.Fatalf("page before 4: %v %v", page, err)
	}
	page, err = h.client.History(servertest.Ctx(t), &roomv1.HistoryRequest{Room: "r", BeforeSeq: 1})
	if err != nil || len(page.GetMessages()) != 0 {
		t.Fatalf("page before 1: %v %v", page, err)
	}
	_, err = h.client.History(servertest.Ctx(t), &roomv1.HistoryRequest{Room: "r", Limit: 201})
	servertest.WantCode(t, err, codes.InvalidArgument)

	// Join reports the position, so a joiner knows where live events start.
	if r := h.join(t, "r", "c3", "carol"); r.GetLastSeq() != 4 || r.GetEpoch() != p1.GetEpoch() {
		t.Fatalf("join after messages %+v", r)
	}
}

func TestHistoryIsCappedAndRecoveryIsAllOrNothing(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.HistoryCap = 5 })
	h.join(t, "r", "c1", "alice")
	var epoch string
	for i := 1; i <= 8; i++ {
		epoch = h.publish(t, "r", "c1", "alice", fmt.Sprint("m", i), "").GetEpoch()
	}
	hist, err := h.client.History(servertest.Ctx(t), &roomv1.HistoryRequest{Room: "r", Limit: 200})
	if err != nil || len(hist.GetMessages()) != 5 || hist.GetMessages()[0].GetSeq() != 4 {
		t.Fatalf("capped history: %v %v", hist, err)
	}

	recover := func(epoch string, after uint64) *roomv1.RecoverResponse {
		t.Helper()
		r, err := h.client.Recover(servertest.Ctx(t), &roomv1.RecoverRequest{Room: "r", Epoch: epoch, AfterSeq: after})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	seqs := func(r *roomv1.RecoverResponse) []uint64 {
		var out []uint64
		for _, m := range r.GetMessages() {
			out = append(out, m.GetSeq())
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		epoch     string
		after     uint64
		recovered bool
		want      string
	}{
		{"history reaches back", epoch, 5, true, "[6 7 8]"},
		{"exactly the oldest kept", epoch, 3, true, "[4 5 6 7 8]"},
		{"one too far back", epoch, 2, false, "[]"},
		{"nothing missed", epoch, 8, true, "[]"},
		{"position from the future", epoch, 9, false, "[]"},
		{"other epoch", "0123456789abcdef", 7, false, "[]"},
		{"no epoch", "", 0, false, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := recover(tc.epoch, tc.after)
			if r.GetRecovered() != tc.recovered || fmt.Sprint(seqs(r)) != tc.want || r.GetLastSeq() != 8 || r.GetEpoch() != epoch {
				t.Fatalf("recover after %d: recovered=%v %v last=%d, want %v %s", tc.after, r.GetRecovered(), seqs(r), r.GetLastSeq(), tc.recovered, tc.want)
			}
		})
	}

	// Losing the history starts a new epoch: old positions are not recoverable.
	ctx := servertest.Ctx(t)
	if err := h.rdb.Del(ctx, keys{h.cfg.Redis.KeyPrefix}.room("r").history).Err(); err != nil {
		t.Fatal(err)
	}
	p := h.publish(t, "r", "c1", "alice", "after the loss", "")
	if p.GetSeq() != 1 || p.GetEpoch() == epoch {
		t.Fatalf("publish after history loss %+v (old epoch %s)", p, epoch)
	}
	if r := recover(epoch, 8); r.GetRecovered() || r.GetEpoch() != p.GetEpoch() {
		t.Fatalf("recovering an old epoch: %+v", r)
	}
	if r := recover(p.GetEpoch(), 0); !r.GetRecovered() || fmt.Sprint(seqs(r)) != "[1]" {
		t.Fatalf("recovering the new epoch from 0: %+v", r)
	}
}

func TestHistoryExpiresWhenIdle(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.HistoryIdleTTL = 300 * time.Millisecond })
	h.join(t, "r", "c1", "alice")
	first := h.publish(t, "r", "c1", "alice", "old", "")
	time.Sleep(400 * time.Millisecond)
	p := h.publish(t, "r", "c1", "alice", "new", "")
	if p.GetSeq() != 1 || p.GetEpoch() == first.GetEpoch() {
		t.Fatalf("after idle expiry: %+v, first epoch %s", p, first.GetEpoch())
	}
}

func TestAwkwardRoomNamesAreIsolated(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	names := []string{
		"a", "a ", " a", "{a}", "a}", "{", "}{", "a:b", "a:b:", "*", "?", "[ab]", "a*", "room:{x}:conns",
		"大厅", "聊天室 1", "🎉🎉", "🎉", "\u00e9", "e\u0301", strings.Repeat("長", 100),
	}
	for i, name := range names {
		conn, user := fmt.Sprint("c", i), fmt.Sprint("u", i)
		h.join(t, name, conn, user)
		if p := h.publish(t, name, conn, user, "hello "+name, ""); p.GetSeq() != 1 {
			t.Fatalf("room %q: first seq %d, want 1 (collides with another room?)", name, p.GetSeq())
		}
	}
	for i, name := range names {
		got := h.members(t, name)
		if want := fmt.Sprintf("u%d(name-u%d)x1", i, i); len(got) != 1 || got[0] != want {
			t.Fatalf("room %q has members %v, want [%s]", name, got, want)
		}
		hist, err := h.client.History(servertest.Ctx(t), &roomv1.HistoryRequest{Room: name})
		if err != nil || len(hist.GetMessages()) != 1 || hist.GetMessages()[0].GetRoom() != name || hist.GetMessages()[0].GetText() != "hello "+name {
			t.Fatalf("room %q history %v %v", name, hist, err)
		}
	}
	// Every room key has exactly one hash tag, and it is the encoded room name.
	valid := map[string]bool{}
	for _, n := range names {
		valid[base64.RawURLEncoding.EncodeToString([]byte(n))] = true
	}
	for _, k := range redistest.Keys(t, servertest.Ctx(t), h.rdb, h.prefix+"room:room:") {
		open := strings.Index(k, "{")
		end := strings.Index(k[open:], "}") + open
		if !valid[k[open+1:end]] || strings.Count(k, "{") != 1 {
			t.Fatalf("key %q: hash tag %q is not an encoded room name", k, k[open+1:end])
		}
	}

	for _, bad := range []string{"", strings.Repeat("x", 101), "tab\there", "new\nline", "nul\x00", "\u200b"} {
		_, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: bad, ConnId: "c", UserId: "u", Username: "n"})
		servertest.WantCode(t, err, codes.InvalidArgument)
	}
}

func TestRequestLimits(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.join(t, "r", "c1", "alice")
	pub := func(text, cmid string) error {
		_, err := h.client.Publish(servertest.Ctx(t), &roomv1.PublishRequest{Room: "r", ConnId: "c1", UserId: "alice", Username: "a", Text: text, ClientMsgId: cmid})
		return err
	}
	servertest.WantCode(t, pub("", ""), codes.InvalidArgument)
	servertest.WantCode(t, pub(strings.Repeat("x", 4001), ""), codes.InvalidArgument)
	servertest.WantCode(t, pub("x", strings.Repeat("i", 65)), codes.InvalidArgument)
	servertest.WantCode(t, pub(strings.Repeat("字", 4000), ""), codes.OK)
	_, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: "r", ConnId: "c2", UserId: "u", Username: "n", MemberLimit: 1001})
	servertest.WantCode(t, err, codes.InvalidArgument)
	_, err = h.client.Members(servertest.Ctx(t), &roomv1.MembersRequest{Room: "r", Limit: 10001})
	servertest.WantCode(t, err, codes.InvalidArgument)
	_, err = h.client.LeaveAll(servertest.Ctx(t), &roomv1.LeaveAllRequest{})
	servertest.WantCode(t, err, codes.InvalidArgument)
}

// TestConcurrentJoinLeavePublish: 200 goroutines join, leave and publish at once in a few
// rooms. Afterwards membership is exact, seqs are unique and gap-free, every published message
// is in the history exactly once, and pub/sub delivered messages in seq order.
func TestConcurrentJoinLeavePublish(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	rooms := []string{"r0", "r1", "r2", "r3"}
	nexts := map[string]func(int) []string{}
	for _, r := range rooms {
		nexts[r] = h.events(t, r)
	}
	const workers, msgsEach = 200, 3
	type result struct {
		room string
		seq  uint64
		text string
	}
	results := make(chan result, workers*msgsEach)
	stays := map[string]map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := rooms[w%len(rooms)]
			conn, user := fmt.Sprint("c", w), fmt.Sprint("u", w%30)
			h.join(t, room, conn, user)
			for i := range msgsEach {
				text := fmt.Sprintf("%s-%d", conn, i)
				p := h.publish(t, room, conn, user, text, "")
				results <- result{room, p.GetSeq(), text}
			}
			if w%3 == 0 {
				h.leave(t, room, conn)
				return
			}
			mu.Lock()
			if stays[room] == nil {
				stays[room] = map[string]bool{}
			}
			stays[room][conn] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(results)

	bySeq := map[string]map[uint64]string{}
	for r := range results {
		if bySeq[r.room] == nil {
			bySeq[r.room] = map[uint64]string{}
		}
		if prev, dup := bySeq[r.room][r.seq]; dup {
			t.Fatalf("room %s: seq %d given to %q and %q", r.room, r.seq, prev, r.text)
		}
		bySeq[r.room][r.seq] = r.text
	}
	for _, room := range rooms {
		n := uint64(len(bySeq[room]))
		hist, err := h.client.History(servertest.Ctx(t), &roomv1.HistoryRequest{Room: room, Limit: 200})
		if err != nil {
			t.Fatal(err)
		}
		if hist.GetLastSeq() != n || uint64(len(hist.GetMessages())) != n {
			t.Fatalf("room %s: last seq %d, %d in history, %d published", room, hist.GetLastSeq(), len(hist.GetMessages()), n)
		}
		for i, m := range hist.GetMessages() {
			if m.GetSeq() != uint64(i+1) || bySeq[room][m.GetSeq()] != m.GetText() {
				t.Fatalf("room %s: history[%d] is #%d %q, want #%d %q", room, i, m.GetSeq(), m.GetText(), i+1, bySeq[room][uint64(i+1)])
			}
		}

		// Membership: exactly the connections that stayed, grouped by user.
		wantUsers := map[string]int{}
		for conn := range stays[room] {
			var w int
			fmt.Sscanf(conn, "c%d", &w)
			wantUsers[fmt.Sprint("u", w%30)]++
		}
		var want []string
		for u, n := range wantUsers {
			want = append(want, fmt.Sprintf("%s(name-%s)x%d", u, u, n))
		}
		sort.Strings(want)
		equalLines(t, h.members(t, room), want)
		conns := h.rdb.HLen(servertest.Ctx(t), keys{h.cfg.Redis.KeyPrefix}.room(room).conns).Val()
		if int(conns) != len(stays[room]) {
			t.Fatalf("room %s: %d connections recorded, %d stayed", room, conns, len(stays[room]))
		}

		// Pub/sub carried the messages in seq order (joined/left events interleave).
		var seqs []uint64
		for len(seqs) < int(n) {
			for _, ev := range nexts[room](1) {
				var seq uint64
				if _, err := fmt.Sscanf(ev, "message "+room+" #%d", &seq); err == nil {
					seqs = append(seqs, seq)
				}
			}
		}
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("room %s: pub/sub order %v", room, seqs)
			}
		}
	}
}

// appendUnbound writes a CONNECTION_UNBOUND event to the presence stream, as presence does.
func (h *harness) appendUnbound(t testing.TB, conn, user string, version uint64) {
	t.Helper()
	b, err := proto.Marshal(&presencev1.PresenceEvent{
		Kind: presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_UNBOUND, UserId: user, ConnId: conn,
		EdgeId: "dead-edge", Version: version, Time: timestamppb.Now(), Reason: presencev1.UnbindReason_UNBIND_REASON_LEASE_EXPIRED,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.rdb.XAdd(servertest.Ctx(t), &redis.XAddArgs{Stream: h.cfg.PresenceEvents, Values: []any{"event", b}}).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestUnboundConnectionsAreCleanedUp(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	next := h.events(t, "r")
	h.join(t, "r", "ghost-1", "g")
	h.join(t, "r2", "ghost-1", "g")
	h.join(t, "r", "ghost-2", "g")
	h.join(t, "r", "live", "l")
	equalLines(t, next(2), []string{"joined r g(name-g)", "joined r l(name-l)"})

	h.appendUnbound(t, "ghost-1", "g", 7)
	h.appendUnbound(t, "ghost-2", "g", 8)
	// Duplicates and an explicit LeaveAll too: one `left`, nothing else.
	h.appendUnbound(t, "ghost-2", "g", 8)
	equalLines(t, next(1), []string{"left r g(name-g)"})
	if _, err := h.client.LeaveAll(servertest.Ctx(t), &roomv1.LeaveAllRequest{ConnId: "ghost-1"}); err != nil {
		t.Fatal(err)
	}
	equalLines(t, h.members(t, "r"), []string{"l(name-l)x1"})
	equalLines(t, h.members(t, "r2"), []string{})
	if keys := redistest.Keys(t, servertest.Ctx(t), h.rdb, h.cfg.Redis.KeyPrefix+"conn:{ghost"); len(keys) != 0 {
		t.Fatalf("index keys of ghosts left: %v", keys)
	}
	// Every event was acknowledged.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := h.rdb.XPending(servertest.Ctx(t), h.cfg.PresenceEvents, h.cfg.CleanupGroup).Result()
		if err == nil && p.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending presence events: %v %v", p, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLeaveAllReportsRooms(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	for _, r := range []string{"a", "b", "c"} {
		h.join(t, r, "c1", "u")
	}
	h.leave(t, "b", "c1")
	resp, err := h.client.LeaveAll(servertest.Ctx(t), &roomv1.LeaveAllRequest{ConnId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetRooms()
	sort.Strings(got)
	equalLines(t, got, []string{"a", "c"})
	resp, err = h.client.LeaveAll(servertest.Ctx(t), &roomv1.LeaveAllRequest{ConnId: "c1"})
	if err != nil || len(resp.GetRooms()) != 0 {
		t.Fatalf("second LeaveAll: %v %v", resp, err)
	}
}

// TestJoinAndLeaveAllBatches: each item of a batch is answered as its unary call would be,
// and a bad item fails alone.
func TestJoinAndLeaveAllBatches(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	next := h.events(t, "a")
	h.join(t, "a", "c9", "zed")
	join := func(room, conn, user string) *roomv1.JoinRequest {
		return &roomv1.JoinRequest{Room: room, ConnId: conn, UserId: user, Username: "name-" + user}
	}
	resp, err := h.client.JoinBatch(servertest.Ctx(t), &roomv1.JoinBatchRequest{Joins: []*roomv1.JoinRequest{
		join("a", "c1", "u1"), join("a", "c9", "mallory"), join("", "c2", "u2"), join("b", "c1", "u1"), join("a", "c2", "u2"), join("a", "c3", "u1"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.GetResults() {
		got = append(got, fmt.Sprintf("%s joined=%v count=%d members=%d", codes.Code(r.GetCode()), r.GetResponse().GetUserJoined(), r.GetResponse().GetMemberCount(), len(r.GetResponse().GetMembers())))
	}
	equalLines(t, got, []string{
		"OK joined=true count=2 members=2",
		"FailedPrecondition joined=false count=0 members=0",
		"InvalidArgument joined=false count=0 members=0",
		"OK joined=true count=1 members=1",
		"OK joined=true count=3 members=3",
		"OK joined=false count=3 members=3",
	})
	equalLines(t, h.members(t, "a"), []string{"u1(name-u1)x2", "u2(name-u2)x1", "zed(name-zed)x1"})

	left, err := h.client.LeaveAllBatch(servertest.Ctx(t), &roomv1.LeaveAllBatchRequest{ConnIds: []string{"c1", "c{x}", "c2", "nobody", "c3"}})
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, r := range left.GetResults() {
		rooms := r.GetResponse().GetRooms()
		sort.Strings(rooms)
		got = append(got, fmt.Sprintf("%s %v", codes.Code(r.GetCode()), rooms))
	}
	equalLines(t, got, []string{"OK [a b]", "InvalidArgument []", "OK [a]", "OK []", "OK [a]"})
	equalLines(t, h.members(t, "a"), []string{"zed(name-zed)x1"})
	equalLines(t, h.members(t, "b"), []string{})
	// u1 leaves room a with its last connection (c3), not with c1.
	equalLines(t, next(5), []string{
		"joined a zed(name-zed)", "joined a u1(name-u1)", "joined a u2(name-u2)", "left a u2(name-u2)", "left a u1(name-u1)",
	})
}

func TestRedisDownIsUnavailable(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.Redis.Addrs = servertest.DeadAddr(t); c.Redis.Timeout = 200 * time.Millisecond })
	calls := map[string]func(context.Context) error{
		"Join": func(ctx context.Context) error {
			_, err := h.client.Join(ctx, &roomv1.JoinRequest{Room: "r", ConnId: "c", UserId: "u", Username: "n"})
			return err
		},
		"Leave": func(ctx context.Context) error {
			_, err := h.client.Leave(ctx, &roomv1.LeaveRequest{Room: "r", ConnId: "c"})
			return err
		},
		"LeaveAll": func(ctx context.Context) error {
			_, err := h.client.LeaveAll(ctx, &roomv1.LeaveAllRequest{ConnId: "c"})
			return err
		},
		"Publish": func(ctx context.Context) error {
			_, err := h.client.Publish(ctx, &roomv1.PublishRequest{Room: "r", ConnId: "c", UserId: "u", Username: "n", Text: "t"})
			return err
		},
		"History": func(ctx context.Context) error {
			_, err := h.client.History(ctx, &roomv1.HistoryRequest{Room: "r"})
			return err
		},
		"Recover": func(ctx context.Context) error {
			_, err := h.client.Recover(ctx, &roomv1.RecoverRequest{Room: "r", Epoch: "e", AfterSeq: 1})
			return err
		},
		"Members": func(ctx context.Context) error {
			_, err := h.client.Members(ctx, &roomv1.MembersRequest{Room: "r"})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) { servertest.WantCode(t, call(servertest.Ctx(t)), codes.Unavailable) })
	}
}

func TestPublishBatch(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.join(t, "a", "c1", "alice")
	h.join(t, "b", "c1", "alice")
	next := h.events(t, "a")
	msg := func(room, text, cmid string) *roomv1.PublishRequest {
		return &roomv1.PublishRequest{Room: room, ConnId: "c1", UserId: "alice", Username: "name-alice", Text: text, ClientMsgId: cmid}
	}
	// A script cache lost (a Redis restart) is reloaded, and the batch still runs once.
	if err := h.rdb.ScriptFlush(servertest.Ctx(t)).Err(); err != nil {
		t.Fatal(err)
	}
	resp, err := h.client.PublishBatch(servertest.Ctx(t), &roomv1.PublishBatchRequest{Messages: []*roomv1.PublishRequest{
		msg("a", "one", "x1"), msg("b", "elsewhere", ""), msg("nope", "not joined", ""), msg("a", "two", ""), msg("a", "one again", "x1"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.GetResults() {
		got = append(got, fmt.Sprintf("%d #%d dup=%v", r.GetCode(), r.GetResponse().GetSeq(), r.GetResponse().GetDuplicate()))
	}
	equalLines(t, got, []string{"0 #1 dup=false", "0 #1 dup=false", "7 #0 dup=false", "0 #2 dup=false", "0 #1 dup=true"})
	if resp.GetResults()[2].GetMessage() == "" {
		t.Fatal("a refused publish has no message")
	}
	equalLines(t, next(2), []string{"message a #1 alice(name-alice): one", "message a #2 alice(name-alice): two"})

	for _, tc := range []struct {
		name string
		req  *roomv1.PublishBatchRequest
	}{
		{"empty", &roomv1.PublishBatchRequest{}},
		{"one invalid", &roomv1.PublishBatchRequest{Messages: []*roomv1.PublishRequest{msg("a", "ok", ""), msg("a", "", "")}}},
		{"too many", &roomv1.PublishBatchRequest{Messages: func() []*roomv1.PublishRequest {
			out := make([]*roomv1.PublishRequest, 257)
			for i := range out {
				out[i] = msg("a", "x", "")
			}
			return out
		}()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.PublishBatch(servertest.Ctx(t), tc.req)
			servertest.WantCode(t, err, codes.InvalidArgument)
		})
	}
}

// TestJoinAfterScriptCacheLoss: a Redis that lost its scripts (a restart) still joins.
func TestJoinAfterScriptCacheLoss(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	if err := h.rdb.ScriptFlush(servertest.Ctx(t)).Err(); err != nil {
		t.Fatal(err)
	}
	if r := h.join(t, "r", "c1", "alice"); !r.GetUserJoined() || r.GetMemberCount() != 1 {
		t.Fatalf("join after SCRIPT FLUSH: %+v", r)
	}
	equalLines(t, h.members(t, "r"), []string{"alice(name-alice)x1"})
}

// TestMembersVersion: a join lists members only when the caller's version is not current; a
// version changes with every change among the first MaxJoinMembers members, and only then,
// and is never reused, not even after the room emptied.
func TestMembersVersion(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	join := func(conn, user, known string) *roomv1.JoinResponse {
		t.Helper()
		r, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: "r", ConnId: conn, UserId: user, Username: "n", KnownMembersVersion: known})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	seen := map[string]bool{}
	fresh := func(v string) {
		t.Helper()
		if v == "" || seen[v] {
			t.Fatalf("version %q is empty or reused", v)
		}
		seen[v] = true
	}
	r1 := join("c1", "u1", "")
	fresh(r1.GetMembersVersion())
	if r1.GetMembersUnchanged() || len(r1.GetMembers()) != 1 {
		t.Fatalf("first join %v", r1)
	}
	if r := join("c2", "u1", r1.GetMembersVersion()); !r.GetMembersUnchanged() || len(r.GetMembers()) != 0 || r.GetMemberCount() != 1 || r.GetMembersVersion() != r1.GetMembersVersion() {
		t.Fatalf("second tab with the current version %v", r)
	}
	r3 := join("c3", "u2", r1.GetMembersVersion())
	fresh(r3.GetMembersVersion())
	if r3.GetMembersUnchanged() || len(r3.GetMembers()) != 2 {
		t.Fatalf("a new member with an old version %v", r3)
	}
	if r := join("c4", "u1", "stale"); r.GetMembersUnchanged() || len(r.GetMembers()) != 2 || r.GetMembersVersion() != r3.GetMembersVersion() {
		t.Fatalf("unknown version %v", r)
	}
	h.leave(t, "r", "c3")
	r5 := join("c5", "u1", r3.GetMembersVersion())
	fresh(r5.GetMembersVersion())
	for _, c := range []string{"c1", "c2", "c4", "c5"} {
		h.leave(t, "r", c)
	}
	if keys := redistest.Keys(t, servertest.Ctx(t), h.rdb, h.prefix+"room:"); len(keys) != 0 {
		t.Fatalf("keys of an empty room: %v", keys)
	}
	r6 := join("c6", "u1", r1.GetMembersVersion())
	fresh(r6.GetMembersVersion())
	if r6.GetMembersUnchanged() {
		t.Fatalf("a new life of the room took an old version: %v", r6)
	}

	// Beyond the first MaxJoinMembers members, comings and goings keep the version.
	var reqs []*roomv1.JoinRequest
	for i := range roomv1.MaxJoinMembers {
		reqs = append(reqs, &roomv1.JoinRequest{Room: "big", ConnId: fmt.Sprintf("b%04d", i), UserId: fmt.Sprintf("m%04d", i), Username: "n"})
	}
	for from := 0; from < len(reqs); from += roomv1.MaxBatch {
		resp, err := h.client.JoinBatch(servertest.Ctx(t), &roomv1.JoinBatchRequest{Joins: reqs[from:min(from+roomv1.MaxBatch, len(reqs))]})
		if err != nil || resp.GetResults()[0].GetCode() != 0 {
			t.Fatalf("%v %v", resp.GetResults()[0], err)
		}
	}
	bigJoin := func(conn, user string) string {
		t.Helper()
		r, err := h.client.Join(servertest.Ctx(t), &roomv1.JoinRequest{Room: "big", ConnId: conn, UserId: user, Username: "n", MemberLimit: 1})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetMembersVersion()
	}
	v := bigJoin("b0000", "m0000")
	if got := bigJoin("z1", "zz"); got != v {
		t.Fatalf("a member beyond the window changed the version: %s -> %s", v, got)
	}
	h.leave(t, "big", "z1")
	if got := bigJoin("b0000", "m0000"); got != v {
		t.Fatalf("a member beyond the window left and changed the version: %s -> %s", v, got)
	}
	if got := bigJoin("a1", "a"); got == v {
		t.Fatal("a member within the window kept the version")
	}
}

// TestCleanupTakesOverAndRecreates: events a dead consumer read but never acknowledged are taken
// over once idle for CleanupClaimIdle, and a consumer group that disappeared (a Redis that
// restarted empty) is made again.
func TestCleanupTakesOverAndRecreates(t *testing.T) {
	t.Parallel()
	probe := redistest.Client(t)
	cfg := testConfig(redistest.Prefix(t, probe))
	cfg.CleanupClaimIdle = 300 * time.Millisecond
	svc := NewService(servertest.Logger(), cfg, servertest.Redis(t, cfg.Redis))
	h := &harness{svc: svc, rdb: probe, cfg: cfg}
	ctx := servertest.Ctx(t)
	for _, conn := range []string{"ghost", "later"} {
		if _, err := svc.Join(ctx, &roomv1.JoinRequest{Room: "r", ConnId: conn, UserId: conn, Username: conn}); err != nil {
			t.Fatal(err)
		}
	}
	// A replica read the event and died.
	if err := probe.XGroupCreateMkStream(ctx, cfg.PresenceEvents, cfg.CleanupGroup, "0").Err(); err != nil {
		t.Fatal(err)
	}
	h.appendUnbound(t, "ghost", "ghost", 1)
	if got, err := probe.XReadGroup(ctx, &redis.XReadGroupArgs{Group: cfg.CleanupGroup, Consumer: "dead", Streams: []string{cfg.PresenceEvents, ">"}}).Result(); err != nil || len(got[0].Messages) != 1 {
		t.Fatalf("dead consumer read %v %v", got, err)
	}

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.RunCleanup(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	members := func() string {
		m, err := svc.Members(ctx, &roomv1.MembersRequest{Room: "r"})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, u := range m.GetMembers() {
			ids = append(ids, u.GetUserId())
		}
		return strings.Join(ids, ",")
	}
	waitFor := func(what, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for members() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: members %q, want %q", what, members(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the dead consumer's event taken over", "later")

	// The group vanishes; the next event is still handled.
	if err := probe.XGroupDestroy(ctx, cfg.PresenceEvents, cfg.CleanupGroup).Err(); err != nil {
		t.Fatal(err)
	}
	h.appendUnbound(t, "later", "later", 1)
	waitFor("after the group was lost", "")
}
