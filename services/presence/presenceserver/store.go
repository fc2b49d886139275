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
	"github.com/chatrt/chat/platform"
)

// keys builds the presence service's Redis keys. The part in braces is the hash tag: every
// script touches keys of one tag only, so the same code runs on Redis Cluster. Ids never
// contain braces (the API refuses them), so a tag always ends where we end it.
type keys struct{ prefix string }

// conn is the record of one connection (a string, see connRecordValue).
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
	//go:embed lua/bind_user.lua
	bindUserSrc string
	//go:embed lua/unbind_user.lua
	unbindUserSrc string
	//go:embed lua/renew_lease.lua
	renewLeaseSrc string
	//go:embed lua/end_lease.lua
	endLeaseSrc string

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

// binding is one connection's record.
type binding struct {
	ConnID, UserID, Username, EdgeID string
	BoundAt                          time.Time
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

// edgeClaim is what queueEdgeClaims found for one binding.
type edgeClaim struct {
	deadline time.Time // of the edge's lease; zero without a lease
	owner    string    // the user the edge index names for the connection
	added    bool      // this call added the index entry
	err      error
}

// queueEdgeClaims queues, for each binding, the read of its edge's lease deadline and the
// addition of the connection to its edge's index unless it is there; the returned function
// reads the results once the pipeline ran.
func (s *store) queueEdgeClaims(ctx context.Context, pipe redis.Pipeliner, bs []binding) func() []edgeClaim {
	leases := map[string]*redis.FloatCmd{}
	sets := make([]*redis.BoolCmd, len(bs))
	gets := make([]*redis.StringCmd, len(bs))
	for i, b := range bs {
		if leases[b.EdgeID] == nil {
			leases[b.EdgeID] = pipe.ZScore(ctx, s.keys.leases(), b.EdgeID)
		}
		sets[i] = pipe.HSetNX(ctx, s.keys.edgeConns(b.EdgeID), b.ConnID, b.UserID)
		gets[i] = pipe.HGet(ctx, s.keys.edgeConns(b.EdgeID), b.ConnID)
	}
	return func() []edgeClaim {
		out := make([]edgeClaim, len(bs))
		for i, b := range bs {
			score, lerr := leases[b.EdgeID].Result()
			for _, err := range []error{lerr, sets[i].Err(), gets[i].Err()} {
				if err != nil && !errors.Is(err, redis.Nil) && out[i].err == nil {
					out[i].err = fmt.Errorf("index connection on edge: %w", err)
				}
			}
			if lerr == nil {
				out[i].deadline = time.UnixMilli(int64(score))
			}
			out[i].owner, out[i].added = gets[i].Val(), sets[i].Val()
		}
		return out
	}
}

// dropEdgeConn queues the removal of a connection from its edge's index.
func (s *store) dropEdgeConn(ctx context.Context, pipe redis.Pipeliner, b binding) *redis.IntCmd {
	return pipe.HDel(ctx, s.keys.edgeConns(b.EdgeID), b.ConnID)
}

// dropConn queues the removal of a connection's record.
func (s *store) dropConn(ctx context.Context, pipe redis.Pipeliner, b binding) *redis.IntCmd {
	return pipe.Del(ctx, s.keys.conn(b.ConnID))
}

// connRecordValue is a connection's record: "<user id> <edge id> <bound unix ms> <username>"
// (ids hold no spaces; the username, last, may).
func connRecordValue(b binding) string {
	return b.UserID + " " + b.EdgeID + " " + strconv.FormatInt(b.BoundAt.UnixMilli(), 10) + " " + b.Username
}

// parseConnRecord reads a connRecordValue; ok is false when v is not one.
func parseConnRecord(connID, v string) (b binding, ok bool) {
	parts := strings.SplitN(v, " ", 4)
	if len(parts) != 4 {
		return binding{}, false
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return binding{}, false
	}
	return binding{ConnID: connID, UserID: parts[0], EdgeID: parts[1], BoundAt: time.UnixMilli(ms), Username: parts[3]}, true
}

// queueConnClaims queues, for each binding, the creation of its connection record unless one
// exists, and the read of the record; the returned function reads the results once the
// pipeline ran: 1 when created, 0 when the record already said the same user and edge, -1 when
// it names another.
func (s *store) queueConnClaims(ctx context.Context, pipe redis.Pipeliner, bs []binding) func() ([]int, []error) {
	sets := make([]*redis.BoolCmd, len(bs))
	gets := make([]*redis.StringCmd, len(bs))
	for i, b := range bs {
		sets[i] = pipe.SetNX(ctx, s.keys.conn(b.ConnID), connRecordValue(b), 0)
		gets[i] = pipe.Get(ctx, s.keys.conn(b.ConnID))
	}
	return func() ([]int, []error) {
		out, errs := make([]int, len(bs)), make([]error, len(bs))
		for i, b := range bs {
			created, err := sets[i].Result()
			if err == nil {
				err = gets[i].Err()
			}
			if err != nil {
				errs[i] = fmt.Errorf("record connection: %w", err)
				continue
			}
			cur, _ := parseConnRecord(b.ConnID, gets[i].Val())
			switch {
			case created:
				out[i] = 1
			case cur.UserID == b.UserID && cur.EdgeID == b.EdgeID:
				out[i] = 0
			default:
				out[i] = -1
			}
		}
		return out, errs
	}
}

// connRecords loads connection records in one round trip; ok[i] is false when connIDs[i] has
// none.
func (s *store) connRecords(ctx context.Context, connIDs []string) (bs []binding, ok []bool, errs []error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(connIDs))
	for i, id := range connIDs {
		cmds[i] = pipe.Get(ctx, s.keys.conn(id))
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	bs, ok, errs = make([]binding, len(connIDs)), make([]bool, len(connIDs)), make([]error, len(connIDs))
	for i, c := range cmds {
		v, err := c.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			errs[i] = fmt.Errorf("load connection: %w", err)
			continue
		}
		bs[i], ok[i] = parseConnRecord(connIDs[i], v)
	}
	return bs, ok, errs
}

// bindUsers adds connections to their users, in one round trip after the commands before
// queues.
func (s *store) bindUsers(ctx context.Context, bs []binding, before func(redis.Pipeliner)) ([]userChange, []error) {
	calls := make([]platform.ScriptCall, len(bs))
	for i, b := range bs {
		calls[i] = platform.ScriptCall{
			Keys: []string{s.keys.userConns(b.UserID), s.keys.userMeta(b.UserID)},
			Args: []any{b.ConnID, b.EdgeID, b.BoundAt.UnixMilli(), b.Username},
		}
	}
	cmds := platform.EvalScripts(ctx, s.rdb, bindUserScript, calls, before)
	out, errs := make([]userChange, len(bs)), make([]error, len(bs))
	for i, c := range cmds {
		res, err := c.Int64Slice()
		if err != nil {
			errs[i] = fmt.Errorf("bind connection to user: %w", err)
			continue
		}
		out[i] = userChange{Changed: res[0] == 1, Version: uint64(res[1]), Flipped: res[2] == 1, Username: bs[i].Username}
	}
	return out, errs
}

// unbindUsers removes connections from their users (see unbind_user.lua), in one round trip.
func (s *store) unbindUsers(ctx context.Context, bs []binding, now time.Time, reason presencev1.UnbindReason, claim, retention time.Duration) ([]userChange, []error) {
	calls := make([]platform.ScriptCall, len(bs))
	for i, b := range bs {
		calls[i] = platform.ScriptCall{
			Keys: []string{s.keys.userConns(b.UserID), s.keys.userMeta(b.UserID)},
			Args: []any{b.ConnID, now.UnixMilli(), int32(reason), claim.Milliseconds(), retention.Milliseconds()},
		}
	}
	cmds := platform.EvalScripts(ctx, s.rdb, unbindUserScript, calls, nil)
	out, errs := make([]userChange, len(bs)), make([]error, len(bs))
	for i, c := range cmds {
		res, err := c.Slice()
		if err == nil && len(res) != 5 {
			err = fmt.Errorf("unexpected reply %v", res)
		}
		if err != nil {
			errs[i] = fmt.Errorf("unbind connection from user: %w", err)
			continue
		}
		state, _ := res[0].(int64)
		version, _ := res[1].(int64)
		offline, _ := res[2].(int64)
		r, _ := res[3].(int64)
		name, _ := res[4].(string)
		out[i] = userChange{
			Changed: state == 1, Busy: state == 2, Version: uint64(version), Flipped: offline == 1,
			Reason: presencev1.UnbindReason(r), Username: name,
		}
	}
	return out, errs
}

// unbindUser is unbindUsers for one connection.
func (s *store) unbindUser(ctx context.Context, userID, connID string, now time.Time, reason presencev1.UnbindReason, claim, retention time.Duration) (userChange, error) {
	out, errs := s.unbindUsers(ctx, []binding{{UserID: userID, ConnID: connID}}, now, reason, claim, retention)
	return out[0], errs[0]
}

// finishUnbinds removes what is left of unbound connections, in one round trip: each user's
// tombstone (its events are appended), the edge index entry and the connection record.
func (s *store) finishUnbinds(ctx context.Context, bs []binding) []error {
	pipe := s.rdb.Pipeline()
	cmds := make([][3]*redis.IntCmd, len(bs))
	for i, b := range bs {
		cmds[i] = [3]*redis.IntCmd{
			pipe.HDel(ctx, s.keys.userMeta(b.UserID), "t:"+b.ConnID),
			pipe.HDel(ctx, s.keys.edgeConns(b.EdgeID), b.ConnID),
			pipe.Del(ctx, s.keys.conn(b.ConnID)),
		}
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	errs := make([]error, len(bs))
	for i, cs := range cmds {
		for _, c := range cs {
			if err := c.Err(); err != nil && errs[i] == nil {
				errs[i] = fmt.Errorf("finish unbind: %w", err)
			}
		}
	}
	return errs
}

// appendEvents appends groups of events to the event stream, in order, in one round trip;
// each group gets its own error.
func (s *store) appendEvents(ctx context.Context, groups [][]*presencev1.PresenceEvent) []error {
	errs := make([]error, len(groups))
	pipe := s.rdb.Pipeline()
	cmds := make([][]*redis.StringCmd, len(groups))
	for i, events := range groups {
		for _, ev := range events {
			b, err := proto.Marshal(ev)
			if err != nil {
				errs[i] = fmt.Errorf("encode presence event: %w", err)
				break
			}
			cmds[i] = append(cmds[i], pipe.XAdd(ctx, &redis.XAddArgs{
				Stream: s.keys.events(), MaxLen: s.streamMaxLen, Approx: true, ID: "*",
				Values: []any{eventField, b},
			}))
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command carries its own error
	}
	for i, cs := range cmds {
		for _, c := range cs {
			if err := c.Err(); err != nil && errs[i] == nil {
				errs[i] = fmt.Errorf("append presence events: %w", err)
			}
		}
	}
	return errs
}
