package roomserver

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

	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
	"github.com/chatrt/chat/platform"
)

var (
	//go:embed lua/lib.lua
	libSrc string
	//go:embed lua/join.lua
	joinSrc string
	//go:embed lua/leave.lua
	leaveSrc string
	//go:embed lua/publish.lua
	publishSrc string
	//go:embed lua/members.lua
	membersSrc string

	joinScript    = redis.NewScript(libSrc + joinSrc)
	leaveScript   = redis.NewScript(libSrc + leaveSrc)
	publishScript = redis.NewScript(libSrc + publishSrc)
	membersScript = redis.NewScript(libSrc + membersSrc)
)

// historyField is the stream entry field that holds the encoded RoomEvent of a message.
const historyField = "e"

// errNotMember says the connection is not in the room (as that user).
var errNotMember = errors.New("connection is not in the room")

// store is the Redis side of the room service.
type store struct {
	rdb  redis.UniversalClient
	keys keys
}

// joinResult is the room's state right after a join.
type joinResult struct {
	joined      bool
	lastSeq     uint64
	epoch       string
	memberCount uint32
	members     []*roomv1.Member
	// membersVersion identifies the first members; membersUnchanged says the caller's
	// version is current (and members is empty).
	membersVersion   string
	membersUnchanged bool
}

// joinArgs is one join: the connection, its user, the encoded `joined` event (published if
// this makes the user a member) and how many members to list.
type joinArgs struct {
	room, connID, userID, username string
	event                          []byte
	limit                          int
	// knownVersion is the members version the caller holds ("" for none).
	knownVersion string
}

// joinMany runs joins in one round trip: every connection's room index first (ahead of the
// scripts: should anything fail after it, LeaveAll still finds the room), then each join's
// script. Each join gets its own result or error.
func (s *store) joinMany(ctx context.Context, args []joinArgs) ([]joinResult, []error) {
	index := make([]*redis.IntCmd, len(args))
	calls := make([]platform.ScriptCall, len(args))
	for i, a := range args {
		rk := s.keys.room(a.room)
		calls[i] = platform.ScriptCall{
			Keys: []string{rk.conns, rk.counts, rk.users, rk.meta, rk.channel, rk.membersVersion},
			Args: []any{a.connID, a.userID, a.username, a.event, a.limit, a.knownVersion, roomv1.MaxJoinMembers},
		}
	}
	cmds := platform.EvalScripts(ctx, s.rdb, joinScript, calls, func(pipe redis.Pipeliner) {
		for i, a := range args {
			index[i] = pipe.SAdd(ctx, s.keys.connRooms(a.connID), a.room)
		}
	})
	results := make([]joinResult, len(args))
	errs := make([]error, len(args))
	for i, c := range cmds {
		if err := index[i].Err(); err != nil {
			errs[i] = fmt.Errorf("index join: %w", err)
			continue
		}
		res, err := c.Slice()
		if err != nil {
			errs[i] = fmt.Errorf("join: %w", err)
			continue
		}
		results[i], errs[i] = parseJoin(res)
	}
	return results, errs
}

func parseJoin(res []any) (joinResult, error) {
	if n, _ := res[0].(int64); n < 0 {
		return joinResult{}, errNotMember
	}
	if len(res) < 6 {
		return joinResult{}, fmt.Errorf("join: unexpected reply %v", res)
	}
	joined, _ := res[0].(int64)
	last, _ := res[1].(int64)
	epoch, _ := res[2].(string)
	count, _ := res[3].(int64)
	version, _ := res[4].(string)
	unchanged, _ := res[5].(int64)
	return joinResult{
		joined: joined == 1, lastSeq: uint64(last), epoch: epoch, memberCount: uint32(count),
		membersVersion: version, membersUnchanged: unchanged == 1, members: parseNamedMembers(res[6:]),
	}, nil
}

// parseNamedMembers reads join.lua's "<user id> <username>" entries.
func parseNamedMembers(entries []any) []*roomv1.Member {
	out := make([]*roomv1.Member, 0, len(entries))
	for _, e := range entries {
		s, _ := e.(string)
		id, name, _ := strings.Cut(s, " ")
		out = append(out, &roomv1.Member{UserId: id, Username: name})
	}
	return out
}

// parseMembers reads the flattened (user, name, count) triples of members.lua.
func parseMembers(flat []any) []*roomv1.Member {
	out := make([]*roomv1.Member, 0, len(flat)/3)
	for i := 0; i+2 < len(flat); i += 3 {
		id, _ := flat[i].(string)
		name, _ := flat[i+1].(string)
		countStr, _ := flat[i+2].(string)
		n, _ := strconv.ParseUint(countStr, 10, 32)
		out = append(out, &roomv1.Member{UserId: id, Username: name, Connections: uint32(n)})
	}
	return out
}

// leaveArgs is one connection leaving one room, with its encoded `left` event (see leave.lua).
type leaveArgs struct {
	room, connID string
	event        []byte
}

// leaveResult says whether the connection was in the room, and whether its user left.
type leaveResult struct{ wasMember, userLeft bool }

// leaveMany takes connections out of rooms, each first out of the room and then out of its
// index, in two round trips for all of them (an index entry outlives its membership, never
// the reverse). Each gets its own result or error.
func (s *store) leaveMany(ctx context.Context, args []leaveArgs) ([]leaveResult, []error) {
	calls := make([]platform.ScriptCall, len(args))
	for i, a := range args {
		rk := s.keys.room(a.room)
		calls[i] = platform.ScriptCall{Keys: []string{rk.conns, rk.counts, rk.users, rk.channel, rk.membersVersion}, Args: []any{a.connID, a.event, roomv1.MaxJoinMembers}}
	}
	cmds := platform.EvalScripts(ctx, s.rdb, leaveScript, calls, nil)
	results := make([]leaveResult, len(args))
	errs := make([]error, len(args))
	unindex := make([]*redis.IntCmd, len(args))
	pipe := s.rdb.Pipeline()
	for i, c := range cmds {
		res, err := c.Int64Slice()
		if err != nil {
			errs[i] = fmt.Errorf("leave: %w", err)
			continue
		}
		results[i] = leaveResult{wasMember: res[0] == 1, userLeft: res[1] == 1}
		unindex[i] = pipe.SRem(ctx, s.keys.connRooms(args[i].connID), args[i].room)
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command carries its own error
	}
	for i, c := range unindex {
		if c != nil && c.Err() != nil {
			errs[i] = fmt.Errorf("unindex leave: %w", c.Err())
		}
	}
	return results, errs
}

// connRoomsMany lists the rooms each connection may be in, in one round trip.
func (s *store) connRoomsMany(ctx context.Context, connIDs []string) ([][]string, []error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(connIDs))
	for i, id := range connIDs {
		cmds[i] = pipe.SMembers(ctx, s.keys.connRooms(id))
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	rooms := make([][]string, len(connIDs))
	errs := make([]error, len(connIDs))
	for i, c := range cmds {
		if rooms[i], errs[i] = c.Result(); errs[i] != nil {
			errs[i] = fmt.Errorf("list connection rooms: %w", errs[i])
		}
	}
	return rooms, errs
}

// publishArgs is one message to publish.
type publishArgs struct {
	room, connID, userID, clientMsgID string
	// event is the encoded RoomEvent without seq and epoch.
	event       []byte
	epoch       string // used if the room starts a new epoch
	ts          time.Time
	historyCap  int
	idleTTL     time.Duration
	dedupWindow time.Duration
}

// publishResult is where a message landed.
type publishResult struct {
	seq       uint64
	epoch     string
	ts        time.Time
	duplicate bool
}

// script returns the keys and arguments of publish.lua for a.
func (a publishArgs) script(k keys) (keys []string, argv []any) {
	rk := k.room(a.room)
	window := a.dedupWindow.Milliseconds()
	if a.clientMsgID == "" {
		window = 0
	}
	return []string{rk.conns, rk.meta, rk.history, rk.dedup(a.userID, a.clientMsgID), rk.channel},
		[]any{a.connID, a.userID, a.epoch, a.event, a.historyCap, a.idleTTL.Milliseconds(), window, a.ts.UnixMilli()}
}

func (s *store) publish(ctx context.Context, a publishArgs) (publishResult, error) {
	keys, argv := a.script(s.keys)
	res, err := publishScript.Run(ctx, s.rdb, keys, argv...).Slice()
	if err != nil {
		return publishResult{}, fmt.Errorf("publish: %w", err)
	}
	return parsePublish(res)
}

func parsePublish(res []any) (publishResult, error) {
	if len(res) == 0 {
		return publishResult{}, errors.New("publish: empty reply")
	}
	if n, _ := res[0].(int64); n < 0 {
		return publishResult{}, errNotMember
	}
	if len(res) < 4 {
		return publishResult{}, fmt.Errorf("publish: unexpected reply %v", res)
	}
	state, _ := res[0].(int64)
	seq, _ := res[1].(int64)
	epoch, _ := res[2].(string)
	ts, _ := res[3].(int64)
	return publishResult{seq: uint64(seq), epoch: epoch, ts: time.UnixMilli(ts), duplicate: state == 0}, nil
}

// publishBatch runs publish.lua for each of args, in order, in one pipeline (one round trip).
// Each publish is atomic on its own and gets its own result or error.
func (s *store) publishBatch(ctx context.Context, args []publishArgs) ([]publishResult, []error) {
	calls := make([]platform.ScriptCall, len(args))
	for i, a := range args {
		keys, argv := a.script(s.keys)
		calls[i] = platform.ScriptCall{Keys: keys, Args: argv}
	}
	cmds := platform.EvalScripts(ctx, s.rdb, publishScript, calls, nil)
	results := make([]publishResult, len(args))
	errs := make([]error, len(args))
	for i, c := range cmds {
		res, err := c.Slice()
		if err != nil {
			errs[i] = fmt.Errorf("publish: %w", err)
			continue
		}
		results[i], errs[i] = parsePublish(res)
	}
	return results, errs
}

// roomPosition is a room's epoch and last seq.
type roomPosition struct {
	epoch   string
	lastSeq uint64
}

func positionOf(cmd *redis.SliceCmd) roomPosition {
	vals := cmd.Val()
	var p roomPosition
	if len(vals) == 2 {
		seqStr, _ := vals[0].(string)
		p.lastSeq, _ = strconv.ParseUint(seqStr, 10, 64)
		p.epoch, _ = vals[1].(string)
	}
	return p
}

// history returns up to limit messages before beforeSeq (0: the newest), oldest first, read in
// one transaction with the room's position.
func (s *store) history(ctx context.Context, room string, beforeSeq uint64, limit int64) (roomPosition, []*roomv1.Message, error) {
	rk := s.keys.room(room)
	end := "+"
	if beforeSeq > 0 {
		end = strconv.FormatUint(beforeSeq-1, 10) + "-0"
	}
	tx := s.rdb.TxPipeline()
	meta := tx.HMGet(ctx, rk.meta, "seq", "epoch")
	entries := tx.XRevRangeN(ctx, rk.history, end, "-", limit)
	if _, err := tx.Exec(ctx); err != nil {
		return roomPosition{}, nil, fmt.Errorf("read history: %w", err)
	}
	msgs, err := decodeHistory(entries.Val())
	if err != nil {
		return roomPosition{}, nil, err
	}
	// XREVRANGE answers newest first.
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	return positionOf(meta), msgs, nil
}

// since returns the room's position, the first seq its history still holds (0: none), and
// every message after afterSeq, read in one transaction.
func (s *store) since(ctx context.Context, room string, afterSeq uint64) (pos roomPosition, firstSeq uint64, msgs []*roomv1.Message, err error) {
	rk := s.keys.room(room)
	tx := s.rdb.TxPipeline()
	meta := tx.HMGet(ctx, rk.meta, "seq", "epoch")
	first := tx.XRangeN(ctx, rk.history, "-", "+", 1)
	after := tx.XRange(ctx, rk.history, strconv.FormatUint(afterSeq+1, 10)+"-0", "+")
	if _, err := tx.Exec(ctx); err != nil {
		return roomPosition{}, 0, nil, fmt.Errorf("read history: %w", err)
	}
	if f := first.Val(); len(f) == 1 {
		firstSeq, _ = seqOf(f[0].ID)
	}
	msgs, err = decodeHistory(after.Val())
	if err != nil {
		return roomPosition{}, 0, nil, err
	}
	return positionOf(meta), firstSeq, msgs, nil
}

// seqOf reads the seq from a history entry id "<seq>-0".
func seqOf(id string) (uint64, error) {
	seq, _, _ := strings.Cut(id, "-")
	return strconv.ParseUint(seq, 10, 64)
}

func decodeHistory(entries []redis.XMessage) ([]*roomv1.Message, error) {
	out := make([]*roomv1.Message, 0, len(entries))
	for _, e := range entries {
		raw, _ := e.Values[historyField].(string)
		var ev roomv1.RoomEvent
		if err := proto.Unmarshal([]byte(raw), &ev); err != nil || ev.GetMessage() == nil {
			return nil, fmt.Errorf("decode history entry %s: %v", e.ID, err)
		}
		out = append(out, ev.GetMessage())
	}
	return out, nil
}

func (s *store) members(ctx context.Context, room string, limit int) (uint32, []*roomv1.Member, error) {
	rk := s.keys.room(room)
	res, err := membersScript.Run(ctx, s.rdb, []string{rk.counts, rk.users}, limit).Slice()
	if err != nil {
		return 0, nil, fmt.Errorf("list members: %w", err)
	}
	count, _ := res[0].(int64)
	return uint32(count), parseMembers(res[1:]), nil
}
