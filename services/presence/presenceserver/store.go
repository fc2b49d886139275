package presenceserver

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
)

// keys builds the presence service's Redis keys. The part in braces is the hash tag: every
// script touches keys of one tag only, so the same code runs on Redis Cluster. Ids never
// contain braces (the API refuses them), so a tag always ends where we end it.
type keys struct{ prefix string }

// conn is the record of one connection: user_id, username, edge_id, bound_ms.
func (k keys) conn(connID string) string { return k.prefix + "conn:{" + connID + "}" }

// userConns maps each connection of a user to "<edge id>|<bound unix ms>".
func (k keys) userConns(userID string) string { return k.prefix + "user:{" + userID + "}:conns" }

// userMeta holds a user's version, username, last_seen_ms and unbind tombstones ("t:<conn>").
func (k keys) userMeta(userID string) string { return k.prefix + "user:{" + userID + "}:meta" }

// edgeConns maps each connection of an edge to its user id: what a lease sweep unbinds.
func (k keys) edgeConns(edgeID string) string { return k.prefix + "edge:{" + edgeID + "}:conns" }

// leases is the sorted set of edge ids by lease deadline (unix ms).
func (k keys) leases() string { return k.prefix + "leases" }

// events is the presence event stream (see chat.presence.v1.PresenceEvent).
func (k keys) events() string { return k.prefix + "events" }

var (
	//go:embed lua/claim_conn.lua
	claimConnSrc string
	//go:embed lua/bind_user.lua
	bindUserSrc string
	//go:embed lua/unbind_user.lua
	unbindUserSrc string
	//go:embed lua/renew_lease.lua
	renewLeaseSrc string
	//go:embed lua/end_lease.lua
	endLeaseSrc string

	claimConnScript  = redis.NewScript(claimConnSrc)
	bindUserScript   = redis.NewScript(bindUserSrc)
	unbindUserScript = redis.NewScript(unbindUserSrc)
	renewLeaseScript = redis.NewScript(renewLeaseSrc)
	endLeaseScript   = redis.NewScript(endLeaseSrc)
)

// eventField is the stream entry field that holds the encoded event.
const eventField = "event"

// store is the Redis side of the presence service.
type store struct {
	rdb  redis.UniversalClient
	keys keys
	// streamMaxLen caps the event stream (approximately).
	streamMaxLen int64
}

// renewLease sets an edge's lease deadline and reports whether it had no live lease before.
func (s *store) renewLease(ctx context.Context, edgeID string, now, deadline time.Time) (created bool, err error) {
	n, err := renewLeaseScript.Run(ctx, s.rdb, []string{s.keys.leases()}, edgeID, now.UnixMilli(), deadline.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("renew lease: %w", err)
	}
	return n == 1, nil
}

// lapseLease makes an existing lease lapse at once (so a sweep will finish what a release
// started, even if the releasing process dies).
func (s *store) lapseLease(ctx context.Context, edgeID string) error {
	if err := s.rdb.ZAddXX(ctx, s.keys.leases(), redis.Z{Score: 0, Member: edgeID}).Err(); err != nil {
		return fmt.Errorf("lapse lease: %w", err)
	}
	return nil
}

// endLease removes a lease that has been lapsed since before cutoff; it reports whether it did.
func (s *store) endLease(ctx context.Context, edgeID string, cutoff time.Time) (bool, error) {
	n, err := endLeaseScript.Run(ctx, s.rdb, []string{s.keys.leases()}, edgeID, cutoff.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("end lease: %w", err)
	}
	return n == 1, nil
}

// lapsedEdges lists up to limit edges whose lease deadline is before now.
func (s *store) lapsedEdges(ctx context.Context, now time.Time, limit int64) ([]string, error) {
	edges, err := s.rdb.ZRangeByScore(ctx, s.keys.leases(), &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(now.UnixMilli(), 10), Count: limit,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("list lapsed leases: %w", err)
	}
	return edges, nil
}

// edgeConns maps each connection of an edge to its user.
func (s *store) edgeConns(ctx context.Context, edgeID string) (map[string]string, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.edgeConns(edgeID)).Result()
	if err != nil {
		return nil, fmt.Errorf("list edge connections: %w", err)
	}
	return m, nil
}

// claimEdgeConn reads the edge's lease deadline (ok false: no lease) and adds a connection to
// its edge's index unless it is there, in one round trip; it returns the user the index names
// for the connection and whether this call added it.
func (s *store) claimEdgeConn(ctx context.Context, edgeID, connID, userID string) (deadline time.Time, ok bool, owner string, added bool, err error) {
	pipe := s.rdb.Pipeline()
	lease := pipe.ZScore(ctx, s.keys.leases(), edgeID)
	set := pipe.HSetNX(ctx, s.keys.edgeConns(edgeID), connID, userID)
	get := pipe.HGet(ctx, s.keys.edgeConns(edgeID), connID)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return time.Time{}, false, "", false, fmt.Errorf("index connection on edge: %w", err)
	}
	score, lerr := lease.Result()
	if lerr == nil {
		deadline, ok = time.UnixMilli(int64(score)), true
	}
	return deadline, ok, get.Val(), set.Val(), nil
}

// dropEdgeConn removes a connection from its edge's index.
func (s *store) dropEdgeConn(ctx context.Context, edgeID, connID string) error {
	if err := s.rdb.HDel(ctx, s.keys.edgeConns(edgeID), connID).Err(); err != nil {
		return fmt.Errorf("unindex connection: %w", err)
	}
	return nil
}

// claimConn creates a connection's record; it returns 1 when created, 0 when the record already
// said the same, -1 when it names another user or edge.
func (s *store) claimConn(ctx context.Context, b binding) (int, error) {
	n, err := claimConnScript.Run(ctx, s.rdb, []string{s.keys.conn(b.ConnID)},
		b.UserID, b.Username, b.EdgeID, b.BoundAt.UnixMilli()).Int()
	if err != nil {
		return 0, fmt.Errorf("record connection: %w", err)
	}
	return n, nil
}

// binding is one connection's record.
type binding struct {
	ConnID, UserID, Username, EdgeID string
	BoundAt                          time.Time
}

// connRecord loads a connection's record; ok is false when it has none.
func (s *store) connRecord(ctx context.Context, connID string) (b binding, ok bool, err error) {
	vals, err := s.rdb.HMGet(ctx, s.keys.conn(connID), "user_id", "username", "edge_id", "bound_ms").Result()
	if err != nil {
		return binding{}, false, fmt.Errorf("load connection: %w", err)
	}
	user, _ := vals[0].(string)
	if user == "" {
		return binding{}, false, nil
	}
	name, _ := vals[1].(string)
	edge, _ := vals[2].(string)
	ms, _ := vals[3].(string)
	boundMs, _ := strconv.ParseInt(ms, 10, 64)
	return binding{ConnID: connID, UserID: user, Username: name, EdgeID: edge, BoundAt: time.UnixMilli(boundMs)}, true, nil
}

// userChange is the result of adding or removing one connection of a user.
type userChange struct {
	// Changed is false when there was nothing to do (already bound, or already unbound).
	Changed bool
	// Busy says another caller is appending this unbind's events right now.
	Busy bool
	// Version is the user's version after the change.
	Version uint64
	// Flipped says the user came online (bind) or went offline (unbind).
	Flipped  bool
	Reason   presencev1.UnbindReason
	Username string
}

func (s *store) bindUser(ctx context.Context, b binding) (userChange, error) {
	res, err := bindUserScript.Run(ctx, s.rdb, []string{s.keys.userConns(b.UserID), s.keys.userMeta(b.UserID)},
		b.ConnID, b.EdgeID, b.BoundAt.UnixMilli(), b.Username).Int64Slice()
	if err != nil {
		return userChange{}, fmt.Errorf("bind connection to user: %w", err)
	}
	return userChange{Changed: res[0] == 1, Version: uint64(res[1]), Flipped: res[2] == 1, Username: b.Username}, nil
}

func (s *store) unbindUser(ctx context.Context, userID, connID string, now time.Time, reason presencev1.UnbindReason, claim, retention time.Duration) (userChange, error) {
	res, err := unbindUserScript.Run(ctx, s.rdb, []string{s.keys.userConns(userID), s.keys.userMeta(userID)},
		connID, now.UnixMilli(), int32(reason), claim.Milliseconds(), retention.Milliseconds()).Slice()
	if err != nil {
		return userChange{}, fmt.Errorf("unbind connection from user: %w", err)
	}
	if len(res) != 5 {
		return userChange{}, fmt.Errorf("unbind connection from user: unexpected reply %v", res)
	}
	state, _ := res[0].(int64)
	version, _ := res[1].(int64)
	offline, _ := res[2].(int64)
	r, _ := res[3].(int64)
	name, _ := res[4].(string)
	return userChange{
		Changed: state == 1, Busy: state == 2, Version: uint64(version), Flipped: offline == 1,
		Reason: presencev1.UnbindReason(r), Username: name,
	}, nil
}

// finishUnbind removes what is left of an unbound connection: the user's tombstone (its events
// are appended), the edge index entry and the connection record.
func (s *store) finishUnbind(ctx context.Context, userID, connID, edgeID string) error {
	pipe := s.rdb.Pipeline()
	pipe.HDel(ctx, s.keys.userMeta(userID), "t:"+connID)
	pipe.HDel(ctx, s.keys.edgeConns(edgeID), connID)
	pipe.Del(ctx, s.keys.conn(connID))
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("finish unbind: %w", err)
	}
	return nil
}

// appendEvents appends events to the event stream, in order, in one round trip.
func (s *store) appendEvents(ctx context.Context, events ...*presencev1.PresenceEvent) error {
	if len(events) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	for _, ev := range events {
		b, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode presence event: %w", err)
		}
		pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: s.keys.events(), MaxLen: s.streamMaxLen, Approx: true, ID: "*",
			Values: []any{eventField, b},
		})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("append presence events: %w", err)
	}
	return nil
}

// userConns lists a user's connections.
func (s *store) userConns(ctx context.Context, userID string) ([]binding, error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.userConns(userID)).Result()
	if err != nil {
		return nil, fmt.Errorf("list user connections: %w", err)
	}
	out := make([]binding, 0, len(m))
	for conn, v := range m {
		edge, ms, _ := strings.Cut(v, "|")
		boundMs, _ := strconv.ParseInt(ms, 10, 64)
		out = append(out, binding{ConnID: conn, UserID: userID, EdgeID: edge, BoundAt: time.UnixMilli(boundMs)})
	}
	return out, nil
}

// userStatus is what OnlineStatus reports of one user.
type userStatus struct {
	Connections int64
	LastSeen    time.Time // zero when unknown
}

// statuses reads the connection count and last-seen time of each user in one pipeline.
func (s *store) statuses(ctx context.Context, userIDs []string) ([]userStatus, error) {
	pipe := s.rdb.Pipeline()
	counts := make([]*redis.IntCmd, len(userIDs))
	seen := make([]*redis.StringCmd, len(userIDs))
	for i, id := range userIDs {
		counts[i] = pipe.HLen(ctx, s.keys.userConns(id))
		seen[i] = pipe.HGet(ctx, s.keys.userMeta(id), "last_seen_ms")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read online status: %w", err)
	}
	out := make([]userStatus, len(userIDs))
	for i := range userIDs {
		out[i].Connections = counts[i].Val()
		if ms, err := seen[i].Int64(); err == nil {
			out[i].LastSeen = time.UnixMilli(ms)
		}
	}
	return out, nil
}
