// Package roomserver is the room service: live rooms with membership per connection, gap-free
// message sequencing, capped history, and room events on one pub/sub channel per room.
package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
	"github.com/chatrt/chat/platform"
)

// Service implements chat.room.v1.RoomService.
type Service struct {
	roomv1.UnimplementedRoomServiceServer

	log   *slog.Logger
	cfg   Config
	store *store
	now   func() time.Time
}

var _ roomv1.RoomServiceServer = (*Service)(nil)

// NewService builds the room service on rdb, using the key prefix of cfg.Redis.
func NewService(log *slog.Logger, cfg Config, rdb redis.UniversalClient) *Service {
	return &Service{log: log, cfg: cfg, store: &store{rdb: rdb, keys: keys{prefix: cfg.Redis.KeyPrefix}}, now: time.Now}
}

// Join puts a connection into a room.
func (s *Service) Join(ctx context.Context, req *roomv1.JoinRequest) (*roomv1.JoinResponse, error) {
	resps, errs := s.joinMany(ctx, []*roomv1.JoinRequest{req})
	return resps[0], errs[0]
}

// JoinBatch makes several joins, their Redis work in one round trip.
func (s *Service) JoinBatch(ctx context.Context, req *roomv1.JoinBatchRequest) (*roomv1.JoinBatchResponse, error) {
	resps, errs := s.joinMany(ctx, req.GetJoins())
	return &roomv1.JoinBatchResponse{Results: platform.BatchResults(resps, errs, func(code uint32, msg string, r *roomv1.JoinResponse) *roomv1.JoinResult {
		return &roomv1.JoinResult{Code: code, Message: msg, Response: r}
	})}, nil
}

// joinMany runs joins together; each gets its answer or its status error. Requests are
// validated here, one by one, so that a bad one fails alone.
func (s *Service) joinMany(ctx context.Context, reqs []*roomv1.JoinRequest) ([]*roomv1.JoinResponse, []error) {
	resps := make([]*roomv1.JoinResponse, len(reqs))
	errs := make([]error, len(reqs))
	args := make([]joinArgs, 0, len(reqs))
	at := make([]int, 0, len(reqs)) // the request of each args entry
	ts := timestamppb.New(s.now())
	for _, i := range platform.ValidItems(len(reqs), errs, func(i int) error { return reqs[i].Validate() }) {
		req := reqs[i]
		limit := int(req.GetMemberLimit())
		if limit == 0 {
			limit = roomv1.DefaultJoinMembers
		}
		ev, err := proto.Marshal(&roomv1.RoomEvent{Event: &roomv1.RoomEvent_Joined{Joined: &roomv1.MemberJoined{
			Room: req.GetRoom(), UserId: req.GetUserId(), Username: req.GetUsername(), Ts: ts,
		}}})
		if err != nil {
			errs[i] = status.Error(codes.Internal, "encode event")
			continue
		}
		args = append(args, joinArgs{
			room: req.GetRoom(), connID: req.GetConnId(), userID: req.GetUserId(), username: req.GetUsername(),
			event: ev, limit: limit, knownVersion: req.GetKnownMembersVersion(),
		})
		at = append(at, i)
	}
	if len(args) == 0 {
		return resps, errs
	}
	results, rerrs := s.store.joinMany(ctx, args)
	for j, i := range at {
		switch err := rerrs[j]; {
		case errors.Is(err, errNotMember):
			errs[i] = status.Error(codes.FailedPrecondition, "connection is in the room as another user")
		case err != nil:
			errs[i] = platform.RedisStatus(ctx, err, "join")
		default:
			r := results[j]
			resps[i] = &roomv1.JoinResponse{
				Epoch: r.epoch, LastSeq: r.lastSeq, MemberCount: r.memberCount, Members: r.members, UserJoined: r.joined,
				MembersVersion: r.membersVersion, MembersUnchanged: r.membersUnchanged,
			}
		}
	}
	return resps, errs
}

// Leave takes a connection out of a room.
func (s *Service) Leave(ctx context.Context, req *roomv1.LeaveRequest) (*roomv1.LeaveResponse, error) {
	ev, err := s.leftEvent(req.GetRoom())
	if err != nil {
		return nil, err
	}
	res, errs := s.store.leaveMany(ctx, []leaveArgs{{room: req.GetRoom(), connID: req.GetConnId(), event: ev}})
	if errs[0] != nil {
		return nil, platform.RedisStatus(ctx, errs[0], "leave")
	}
	return &roomv1.LeaveResponse{WasMember: res[0].wasMember, UserLeft: res[0].userLeft}, nil
}

// leftEvent encodes a room's `left` event without the user id and username: leave.lua, which
// alone knows them, appends them.
func (s *Service) leftEvent(room string) ([]byte, error) {
	ev, err := proto.Marshal(&roomv1.RoomEvent{Event: &roomv1.RoomEvent_Left{Left: &roomv1.MemberLeft{
		Room: room, Ts: timestamppb.New(s.now()),
	}}})
	if err != nil {
		return nil, status.Error(codes.Internal, "encode event")
	}
	return ev, nil
}

// LeaveAll takes a connection out of all its rooms.
func (s *Service) LeaveAll(ctx context.Context, req *roomv1.LeaveAllRequest) (*roomv1.LeaveAllResponse, error) {
	resps, errs := s.leaveAllMany(ctx, []string{req.GetConnId()})
	return resps[0], errs[0]
}

// LeaveAllBatch takes several connections out of all their rooms, their Redis work pipelined.
func (s *Service) LeaveAllBatch(ctx context.Context, req *roomv1.LeaveAllBatchRequest) (*roomv1.LeaveAllBatchResponse, error) {
	resps, errs := s.leaveAllMany(ctx, req.GetConnIds())
	return &roomv1.LeaveAllBatchResponse{Results: platform.BatchResults(resps, errs, func(code uint32, msg string, r *roomv1.LeaveAllResponse) *roomv1.LeaveAllResult {
		return &roomv1.LeaveAllResult{Code: code, Message: msg, Response: r}
	})}, nil
}

// leaveAllMany runs LeaveAll for connections together; each gets its answer or its status
// error. Ids are validated here, one by one, so that a bad one fails alone.
func (s *Service) leaveAllMany(ctx context.Context, connIDs []string) ([]*roomv1.LeaveAllResponse, []error) {
	resps := make([]*roomv1.LeaveAllResponse, len(connIDs))
	errs := make([]error, len(connIDs))
	at := platform.ValidItems(len(connIDs), errs, func(i int) error {
		return (&roomv1.LeaveAllRequest{ConnId: connIDs[i]}).Validate()
	})
	valid := make([]string, len(at))
	for j, i := range at {
		valid[j] = connIDs[i]
	}
	rooms, lerrs := s.leaveAll(ctx, valid)
	for j, i := range at {
		if lerrs[j] != nil {
			errs[i] = platform.RedisStatus(ctx, lerrs[j], "leave all")
			continue
		}
		resps[i] = &roomv1.LeaveAllResponse{Rooms: rooms[j]}
	}
	return resps, errs
}

// leaveAll takes each connection out of every room in its index and returns, per connection,
// the rooms it was in, in three round trips for all of them. It is idempotent: the explicit
// LeaveAll of a closing edge and the cleanup of its unbind event may both run, and only one
// of them finds (and announces) each membership.
func (s *Service) leaveAll(ctx context.Context, connIDs []string) ([][]string, []error) {
	left := make([][]string, len(connIDs))
	if len(connIDs) == 0 {
		return left, nil
	}
	rooms, errs := s.store.connRoomsMany(ctx, connIDs)
	var args []leaveArgs
	var owner []int // the connection of each args entry
	for i, rs := range rooms {
		for _, room := range rs {
			ev, err := s.leftEvent(room)
			if err != nil {
				errs[i] = err
				break
			}
			args, owner = append(args, leaveArgs{room: room, connID: connIDs[i], event: ev}), append(owner, i)
		}
	}
	if len(args) == 0 {
		return left, errs
	}
	results, lerrs := s.store.leaveMany(ctx, args)
	for j, i := range owner {
		switch {
		case lerrs[j] != nil:
			if errs[i] == nil {
				errs[i] = lerrs[j]
			}
		case results[j].wasMember:
			left[i] = append(left[i], args[j].room)
		}
	}
	return left, errs
}

// Publish appends a message to a room.
func (s *Service) Publish(ctx context.Context, req *roomv1.PublishRequest) (*roomv1.PublishResponse, error) {
	a, err := s.publishArgs(req)
	if err != nil {
		return nil, err
	}
	res, err := s.store.publish(ctx, a)
	if err != nil {
		return nil, publishStatus(ctx, err)
	}
	return res.response(), nil
}

// PublishBatch appends several messages, in order, in one round trip to Redis.
func (s *Service) PublishBatch(ctx context.Context, req *roomv1.PublishBatchRequest) (*roomv1.PublishBatchResponse, error) {
	args := make([]publishArgs, len(req.GetMessages()))
	for i, m := range req.GetMessages() {
		a, err := s.publishArgs(m)
		if err != nil {
			return nil, err
		}
		args[i] = a
	}
	results, errs := s.store.publishBatch(ctx, args)
	resp := &roomv1.PublishBatchResponse{Results: make([]*roomv1.PublishResult, len(args))}
	for i := range args {
		if errs[i] != nil {
			st := status.Convert(publishStatus(ctx, errs[i]))
			resp.Results[i] = &roomv1.PublishResult{Code: uint32(st.Code()), Message: st.Message()}
			continue
		}
		resp.Results[i] = &roomv1.PublishResult{Response: results[i].response()}
	}
	return resp, nil
}

// publishArgs prepares one publish: the event is encoded here, and publish.lua adds its seq and
// epoch.
func (s *Service) publishArgs(req *roomv1.PublishRequest) (publishArgs, error) {
	// Milliseconds: the precision clients see, and what a duplicate's answer can repeat.
	now := s.now().Truncate(time.Millisecond)
	ev, err := proto.Marshal(&roomv1.RoomEvent{Event: &roomv1.RoomEvent_Message{Message: &roomv1.Message{
		Room: req.GetRoom(), UserId: req.GetUserId(), Username: req.GetUsername(), Text: req.GetText(),
		Ts: timestamppb.New(now), ClientMsgId: req.GetClientMsgId(),
	}}})
	if err != nil {
		return publishArgs{}, status.Error(codes.Internal, "encode event")
	}
	return publishArgs{
		room: req.GetRoom(), connID: req.GetConnId(), userID: req.GetUserId(), clientMsgID: req.GetClientMsgId(),
		event: ev, epoch: newEpoch(), ts: now, historyCap: s.cfg.HistoryCap, idleTTL: s.cfg.HistoryIdleTTL, dedupWindow: s.cfg.DedupWindow,
	}, nil
}

func publishStatus(ctx context.Context, err error) error {
	if errors.Is(err, errNotMember) {
		return status.Error(codes.PermissionDenied, "join the room first")
	}
	return platform.RedisStatus(ctx, err, "publish")
}

func (r publishResult) response() *roomv1.PublishResponse {
	return &roomv1.PublishResponse{Seq: r.seq, Epoch: r.epoch, Duplicate: r.duplicate, Ts: timestamppb.New(r.ts)}
}

// newEpoch returns a fresh epoch: 64 random bits in hex.
func newEpoch() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms.
	return hex.EncodeToString(b)
}

// History pages backwards through a room's history.
func (s *Service) History(ctx context.Context, req *roomv1.HistoryRequest) (*roomv1.HistoryResponse, error) {
	limit := int64(req.GetLimit())
	if limit == 0 {
		limit = roomv1.DefaultHistoryLimit
	}
	pos, msgs, err := s.store.history(ctx, req.GetRoom(), req.GetBeforeSeq(), limit)
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "history")
	}
	return &roomv1.HistoryResponse{Epoch: pos.epoch, LastSeq: pos.lastSeq, Messages: msgs}, nil
}

// Recover answers every message after a position, or nothing.
func (s *Service) Recover(ctx context.Context, req *roomv1.RecoverRequest) (*roomv1.RecoverResponse, error) {
	pos, first, msgs, err := s.store.since(ctx, req.GetRoom(), req.GetAfterSeq())
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "recover")
	}
	resp := &roomv1.RecoverResponse{Epoch: pos.epoch, LastSeq: pos.lastSeq}
	after := req.GetAfterSeq()
	switch {
	case req.GetEpoch() != pos.epoch:
		// Another life of the room (or it has none now): the position means nothing here.
	case after > pos.lastSeq:
	case after == pos.lastSeq:
		resp.Recovered = true
	case first != 0 && first <= after+1 && uint64(len(msgs)) == pos.lastSeq-after:
		resp.Recovered = true
		resp.Messages = msgs
	}
	return resp, nil
}

// Members lists a room's members.
func (s *Service) Members(ctx context.Context, req *roomv1.MembersRequest) (*roomv1.MembersResponse, error) {
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = roomv1.DefaultMembersLimit
	}
	count, members, err := s.store.members(ctx, req.GetRoom(), limit)
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "members")
	}
	return &roomv1.MembersResponse{MemberCount: count, Members: members}, nil
}
