package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
	"github.com/chatrt/chat/platform/redistest"
	"github.com/chatrt/chat/platform/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(redistest.DialRetrier))
}

// connect does what an edge does when a user logs in and joins: bind, then join.
func (b *backend) connect(t *testing.T, edge, conn, user, room string) {
	t.Helper()
	ctx := servertest.Ctx(t)
	if _, err := b.presence.Bind(ctx, &presencev1.BindRequest{ConnId: conn, UserId: user, Username: user, EdgeId: edge}); err != nil {
		t.Fatalf("bind %s: %v", conn, err)
	}
	if _, err := b.room.Join(ctx, &roomv1.JoinRequest{Room: room, ConnId: conn, UserId: user, Username: user}); err != nil {
		t.Fatalf("join %s: %v", conn, err)
	}
}

func (b *backend) heartbeat(t *testing.T, edge string) {
	t.Helper()
	if _, err := b.presence.Heartbeat(servertest.Ctx(t), &presencev1.HeartbeatRequest{EdgeId: edge}); err != nil {
		t.Fatalf("heartbeat %s: %v", edge, err)
	}
}

// subscribe returns the next room event, decoded, within 5s.
func (b *backend) subscribe(t *testing.T, room string) func() *roomv1.RoomEvent {
	t.Helper()
	sub := b.rdb.Subscribe(context.Background(), roomv1.EventChannel(b.cfg.room.Redis.KeyPrefix, room))
	if _, err := sub.Receive(servertest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	ch := sub.Channel()
	return func() *roomv1.RoomEvent {
		t.Helper()
		select {
		case m := <-ch:
			ev := &roomv1.RoomEvent{}
			if err := proto.Unmarshal([]byte(m.Payload), ev); err != nil {
				t.Fatal(err)
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no room event within 5s")
			return nil
		}
	}
}

// dumpKeys renders every key under prefix with its contents, except the event streams (logs
// of what happened, not state).
func dumpKeys(t *testing.T, rdb *redis.Client, prefix string) map[string]string {
	t.Helper()
	ctx := servertest.Ctx(t)
	out := map[string]string{}
	for _, k := range redistest.Keys(t, ctx, rdb, prefix) {
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "hash":
			out[k] = fmt.Sprint(rdb.HGetAll(ctx, k).Val())
		case "set":
			out[k] = fmt.Sprint(rdb.SMembers(ctx, k).Val())
		case "zset":
			out[k] = fmt.Sprint(rdb.ZRangeWithScores(ctx, k, 0, -1).Val())
		case "string":
			out[k] = rdb.Get(ctx, k).Val()
		case "stream":
		default:
			out[k] = typ
		}
	}
	return out
}

// waitFor polls cond every 20ms for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *backend) members(t *testing.T, room string) string {
	t.Helper()
	resp, err := b.room.Members(servertest.Ctx(t), &roomv1.MembersRequest{Room: room})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range resp.GetMembers() {
		out = append(out, fmt.Sprintf("%s x%d", m.GetUserId(), m.GetConnections()))
	}
	return strings.Join(out, ", ")
}

// checkNothingLeftOf asserts that no presence or room key holds the user id or any of the
// needles (its connection id, its username), but for one thing kept on purpose: presence's
// last-seen record of the user (its version, username and last-seen time, expiring after the
// retention period), which the online-status API must answer and which keeps the user's event
// versions growing.
func (b *backend) checkNothingLeftOf(t *testing.T, userID string, needles ...string) {
	t.Helper()
	ctx := servertest.Ctx(t)
	lastSeen := b.cfg.presence.Redis.KeyPrefix + "user:{" + userID + "}:meta"
	needles = append(needles, userID)
	for _, prefix := range []string{b.cfg.room.Redis.KeyPrefix, b.cfg.presence.Redis.KeyPrefix} {
		for k, v := range dumpKeys(t, b.rdb, prefix) {
			if k == lastSeen {
				for f := range b.rdb.HGetAll(ctx, k).Val() {
					if f != "version" && f != "username" && f != "last_seen_ms" {
						t.Errorf("last-seen record %s has field %s: %s", k, f, v)
					}
				}
				if ttl := b.rdb.PTTL(ctx, k).Val(); ttl <= 0 {
					t.Errorf("last-seen record %s does not expire (TTL %v)", k, ttl)
				}
				continue
			}
			for _, n := range needles {
				if strings.Contains(k, n) || strings.Contains(v, n) {
					t.Errorf("%s still holds %q: %s", k, n, v)
				}
			}
		}
	}
}

// checkIntact asserts that a user is online with its connection, and in the room.
func (b *backend) checkIntact(t *testing.T, user, room string) {
	t.Helper()
	st, err := b.presence.OnlineStatus(servertest.Ctx(t), &presencev1.OnlineStatusRequest{UserIds: []string{user}})
	if err != nil || !st.GetStatuses()[0].GetOnline() || st.GetStatuses()[0].GetConnections() != 1 {
		t.Fatalf("status of %s: %v %v", user, st, err)
	}
	if got := b.members(t, room); got != user+" x1" {
		t.Fatalf("members of %s: %q, want %q", room, got, user+" x1")
	}
}

// TestSeedScenarioClose is the seed tutorial's scenario at service level: 10086 and 10087 join
// room "1/1"; 10087's connection closes; nothing of 10087 is left, and 10086 is intact.
func TestSeedScenarioClose(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	next := b.subscribe(t, "1/1")
	b.heartbeat(t, "edge-1")
	b.connect(t, "edge-1", "edge-1-1", "10086", "1/1")
	b.connect(t, "edge-1", "edge-1-2", "10087", "1/1")
	if _, err := b.room.Publish(servertest.Ctx(t), &roomv1.PublishRequest{Room: "1/1", ConnId: "edge-1-2", UserId: "10087", Username: "10087", Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	if got := b.members(t, "1/1"); got != "10086 x1, 10087 x1" {
		t.Fatalf("members %q", got)
	}

	// The socket closes: the edge leaves all rooms, then unbinds.
	ctx := servertest.Ctx(t)
	if _, err := b.room.LeaveAll(ctx, &roomv1.LeaveAllRequest{ConnId: "edge-1-2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.presence.Unbind(ctx, &presencev1.UnbindRequest{ConnId: "edge-1-2"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 4 {
		got = append(got, strings.SplitN(fmt.Sprint(next()), ":", 2)[0])
	}
	if strings.Join(got, " ") != "joined joined message left" {
		t.Fatalf("events %v", got)
	}
	// Wait until the room's cleanup consumer has seen the unbind too (it must change nothing).
	waitFor(t, "cleanup of the unbind event", func() bool {
		p, err := b.rdb.XPending(servertest.Ctx(t), b.cfg.room.PresenceEvents, b.cfg.room.CleanupGroup).Result()
		info, ierr := b.rdb.XInfoGroups(servertest.Ctx(t), b.cfg.room.PresenceEvents).Result()
		return err == nil && ierr == nil && len(info) == 1 && p.Count == 0 && info[0].LastDeliveredID != "0-0" && info[0].Lag == 0
	})
	b.checkNothingLeftOf(t, "10087", "edge-1-2")
	b.checkIntact(t, "10086", "1/1")
}

// TestSeedScenarioEdgeCrash is the same with 10087's edge dying: its lease lapses, presence
// unbinds its connection, and the room service takes it out of the room, with `left`.
func TestSeedScenarioEdgeCrash(t *testing.T) {
	t.Parallel()
	b := startBackend(t, func(s *services) {
		s.presence.LeaseTTL = 500 * time.Millisecond
		s.presence.SweepInterval = 100 * time.Millisecond
	})
	next := b.subscribe(t, "1/1")
	b.heartbeat(t, "edge-1")
	b.heartbeat(t, "edge-2")
	b.connect(t, "edge-1", "edge-1-1", "10086", "1/1")
	b.connect(t, "edge-2", "edge-2-1", "10087", "1/1")
	next()
	next()

	// edge-2 dies: it stops heartbeating. edge-1 goes on.
	crashed := time.Now()
	stop := make(chan struct{})
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				b.presence.Heartbeat(context.Background(), &presencev1.HeartbeatRequest{EdgeId: "edge-1"})
			}
		}
	}()
	defer func() { close(stop); <-beating }()

	ev := next()
	if ev.GetLeft().GetUserId() != "10087" {
		t.Fatalf("event %v, want 10087 left", ev)
	}
	// Within the lease TTL plus one sweep interval, plus the room's reaction.
	if d := time.Since(crashed); d > 500*time.Millisecond+100*time.Millisecond+time.Second {
		t.Fatalf("left after %v", d)
	}
	waitFor(t, "the lapsed lease to be removed", func() bool {
		return b.rdb.ZScore(servertest.Ctx(t), b.cfg.presence.Redis.KeyPrefix+"leases", "edge-2").Err() == redis.Nil
	})
	b.checkNothingLeftOf(t, "10087", "edge-2-1")
	b.checkIntact(t, "10086", "1/1")
}
