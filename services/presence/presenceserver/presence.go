// Package presenceserver is the presence service: which connection belongs to which user on
// which edge, online status, and edge leases that unbind a dead edge's connections.
package presenceserver

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	"github.com/chatrt/chat/platform"
)

// Service implements chat.presence.v1.PresenceService.
//
// State lives in four kinds of keys, each change touching one hash tag at a time so it runs on
// Redis Cluster: the connection record (by connection), the user's connections and version
// (by user), the edge's connections (by edge) and the lease set. The user's keys are the truth
// for online status and are changed by one script per bind or unbind; the others are indexes,
// written before (bind) and cleared after (unbind) the user's keys, so that an index is always a
// superset of the truth and a sweep can always find what to clean.
type Service struct {
	presencev1.UnimplementedPresenceServiceServer

	log   *slog.Logger
	cfg   Config
	store *store
	now   func() time.Time
}

var _ presencev1.PresenceServiceServer = (*Service)(nil)

// NewService builds the presence service on rdb, using the key prefix of cfg.Redis.
func NewService(log *slog.Logger, cfg Config, rdb redis.UniversalClient) *Service {
	return &Service{
		log:   log,
		cfg:   cfg,
		store: &store{rdb: rdb, keys: keys{prefix: cfg.Redis.KeyPrefix}, streamMaxLen: cfg.StreamMaxLen},
		now:   time.Now,
	}
}

// Bind records a connection.
func (s *Service) Bind(ctx context.Context, req *presencev1.BindRequest) (*presencev1.BindResponse, error) {
	resps, errs := s.bindMany(ctx, []*presencev1.BindRequest{req})
	return resps[0], errs[0]
}

// BindBatch records several connections, their Redis work pipelined.
func (s *Service) BindBatch(ctx context.Context, req *presencev1.BindBatchRequest) (*presencev1.BindBatchResponse, error) {
	resps, errs := s.bindMany(ctx, req.GetBinds())
	return &presencev1.BindBatchResponse{Results: platform.BatchResults(resps, errs, func(code uint32, msg string, r *presencev1.BindResponse) *presencev1.BindResult {
		return &presencev1.BindResult{Code: code, Message: msg, Response: r}
	})}, nil
}

// bindMany records connections together, in three round trips for all of them; each gets its
// answer or its status error. The edge index and the connection record are written with the
// lease check; without a live lease (or when the connection id is taken) what this call added
// is taken back.
func (s *Service) bindMany(ctx context.Context, reqs []*presencev1.BindRequest) ([]*presencev1.BindResponse, []error) {
	now := s.now()
	resps := make([]*presencev1.BindResponse, len(reqs))
	errs := make([]error, len(reqs))
	// live tracks the requests still going, with their bindings.
	type item struct {
		at int
		b  binding
	}
	var live []item
	for _, i := range platform.ValidItems(len(reqs), errs, func(i int) error { return reqs[i].Validate() }) {
		req := reqs[i]
		live = append(live, item{i, binding{ConnID: req.GetConnId(), UserID: req.GetUserId(), Username: req.GetUsername(), EdgeID: req.GetEdgeId(), BoundAt: now}})
	}
	bindings := func(items []item) []binding {
		out := make([]binding, len(items))
		for j, it := range items {
			out[j] = it.b
		}
		return out
	}

	// The edge index entry and the connection record are written in one round trip with the
	// lease check (the index first: an index is always a superset of the truth).
	pipe := s.store.rdb.Pipeline()
	edgeClaims := s.store.queueEdgeClaims(ctx, pipe, bindings(live))
	connClaims := s.store.queueConnClaims(ctx, pipe, bindings(live))
	_, _ = pipe.Exec(ctx) // each command carries its own error
	claims := edgeClaims()
	claimed, cerrs := connClaims()
	// A refused bind takes back what its first round trip added, in the next one; a failure
	// to do so is the bind's error.
	type undo struct {
		it            item
		index, record bool
	}
	var undos []undo
	var next []item
	for j, it := range live {
		c, created := claims[j], cerrs[j] == nil && claimed[j] == 1
		switch {
		case c.err != nil:
			errs[it.at] = platform.RedisStatus(ctx, c.err, "bind")
		case cerrs[j] != nil:
			errs[it.at] = platform.RedisStatus(ctx, cerrs[j], "bind")
		case !c.deadline.After(now):
			errs[it.at] = status.Errorf(codes.FailedPrecondition, "edge %q has no live lease: call Heartbeat first", it.b.EdgeID)
		case c.owner != it.b.UserID:
			errs[it.at] = status.Error(codes.FailedPrecondition, "connection id is bound to another user")
		case claimed[j] < 0:
			errs[it.at] = status.Error(codes.FailedPrecondition, "connection id is bound to another user or edge")
		default:
			next = append(next, it)
			continue
		}
		if c.added || created {
			undos = append(undos, undo{it: it, index: c.added, record: created})
		}
	}
	live = next

	var checkUndo func()
	queueUndo := func(pipe redis.Pipeliner) {
		cmds := make([][]*redis.IntCmd, len(undos))
		for k, u := range undos {
			if u.index {
				cmds[k] = append(cmds[k], s.store.dropEdgeConn(ctx, pipe, u.it.b))
			}
			if u.record {
				cmds[k] = append(cmds[k], s.store.dropConn(ctx, pipe, u.it.b))
			}
		}
		checkUndo = func() {
			for k, cs := range cmds {
				for _, c := range cs {
					if err := c.Err(); err != nil {
						errs[undos[k].it.at] = platform.RedisStatus(ctx, err, "bind")
					}
				}
			}
		}
	}
	changes, berrs := s.store.bindUsers(ctx, bindings(live), queueUndo)
	checkUndo()
	var groups [][]*presencev1.PresenceEvent
	var grouped []int // the live item of each group
	for j, it := range live {
		ch := changes[j]
		if berrs[j] != nil {
			errs[it.at] = platform.RedisStatus(ctx, berrs[j], "bind")
			continue
		}
		resps[it.at] = &presencev1.BindResponse{UserCameOnline: ch.Flipped, Version: ch.Version}
		if ch.Changed {
			events := []*presencev1.PresenceEvent{s.event(presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_BOUND, it.b, ch, now)}
			if ch.Flipped {
				events = append(events, s.event(presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_USER_ONLINE, it.b, ch, now))
			}
			groups, grouped = append(groups, events), append(grouped, j)
		}
	}
	for g, err := range s.store.appendEvents(ctx, groups) {
		if err != nil {
			at := live[grouped[g]].at
			resps[at], errs[at] = nil, platform.RedisStatus(ctx, err, "bind")
		}
	}
	return resps, errs
}

// Unbind removes one connection.
func (s *Service) Unbind(ctx context.Context, req *presencev1.UnbindRequest) (*presencev1.UnbindResponse, error) {
	resps, errs := s.unbindConns(ctx, []string{req.GetConnId()})
	return resps[0], errs[0]
}

// UnbindBatch removes several connections, their Redis work pipelined.
func (s *Service) UnbindBatch(ctx context.Context, req *presencev1.UnbindBatchRequest) (*presencev1.UnbindBatchResponse, error) {
	resps, errs := s.unbindConns(ctx, req.GetConnIds())
	return &presencev1.UnbindBatchResponse{Results: platform.BatchResults(resps, errs, func(code uint32, msg string, r *presencev1.UnbindResponse) *presencev1.UnbindResult {
		return &presencev1.UnbindResult{Code: code, Message: msg, Response: r}
	})}, nil
}

// unbindConns unbinds connections by id (closed by their edges); each gets its answer or its
// status error.
func (s *Service) unbindConns(ctx context.Context, connIDs []string) ([]*presencev1.UnbindResponse, []error) {
	resps := make([]*presencev1.UnbindResponse, len(connIDs))
	errs := make([]error, len(connIDs))
	at := platform.ValidItems(len(connIDs), errs, func(i int) error {
		return (&presencev1.UnbindRequest{ConnId: connIDs[i]}).Validate()
	})
	ids := make([]string, len(at))
	for j, i := range at {
		ids[j] = connIDs[i]
	}
	records, ok, rerrs := s.store.connRecords(ctx, ids)
	var bs []binding
	var bat []int
	for j, i := range at {
		switch {
		case rerrs[j] != nil:
			errs[i] = platform.RedisStatus(ctx, rerrs[j], "unbind")
		case !ok[j]:
			resps[i] = &presencev1.UnbindResponse{}
		default:
			bs, bat = append(bs, records[j]), append(bat, i)
		}
	}
	changes, uerrs := s.unbind(ctx, bs, presencev1.UnbindReason_UNBIND_REASON_CLOSED)
	for j, i := range bat {
		if uerrs[j] != nil {
			errs[i] = platform.RedisStatus(ctx, uerrs[j], "unbind")
			continue
		}
		resps[i] = &presencev1.UnbindResponse{Unbound: changes[j].Changed, UserWentOffline: changes[j].Flipped}
	}
	return resps, errs
}

// unbind removes connections from their users, appends the events, and clears the indexes,
// in four round trips for all of them. It is idempotent; see unbind_user.lua for how a retry
// after a failure still appends the events.
func (s *Service) unbind(ctx context.Context, bs []binding, reason presencev1.UnbindReason) ([]userChange, []error) {
	if len(bs) == 0 {
		return nil, nil
	}
	now := s.now()
	changes, errs := s.store.unbindUsers(ctx, bs, now, reason, s.cfg.UnbindClaim, s.cfg.LastSeenRetention)
	var groups [][]*presencev1.PresenceEvent
	var grouped []int
	busy := make([]bool, len(bs))
	for i, ch := range changes {
		if errs[i] != nil {
			continue
		}
		if ch.Busy {
			// Another caller is finishing this very unbind.
			changes[i], busy[i] = userChange{}, true
			continue
		}
		if ch.Changed {
			b := bs[i]
			b.Username = ch.Username
			events := []*presencev1.PresenceEvent{s.event(presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_UNBOUND, b, ch, now)}
			if ch.Flipped {
				events = append(events, s.event(presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_USER_OFFLINE, b, ch, now))
			}
			groups, grouped = append(groups, events), append(grouped, i)
		}
	}
	for g, err := range s.store.appendEvents(ctx, groups) {
		if err != nil {
			errs[grouped[g]] = err
		}
	}
	var finish []binding
	var fat []int
	for i := range bs {
		if errs[i] == nil && !busy[i] {
			finish, fat = append(finish, bs[i]), append(fat, i)
		}
	}
	for j, err := range s.store.finishUnbinds(ctx, finish) {
		if err != nil {
			errs[fat[j]] = err
		}
	}
	return changes, errs
}

func (s *Service) event(kind presencev1.PresenceEventKind, b binding, ch userChange, now time.Time) *presencev1.PresenceEvent {
	return &presencev1.PresenceEvent{
		Kind: kind, UserId: b.UserID, Username: b.Username, ConnId: b.ConnID, EdgeId: b.EdgeID,
		Version: ch.Version, Time: timestamppb.New(now), Reason: ch.Reason,
	}
}

// Heartbeat creates or renews an edge's lease.
func (s *Service) Heartbeat(ctx context.Context, req *presencev1.HeartbeatRequest) (*presencev1.HeartbeatResponse, error) {
	now := s.now()
	deadline := now.Add(s.cfg.LeaseTTL)
	created, err := s.store.renewLease(ctx, req.GetEdgeId(), now, deadline)
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "heartbeat")
	}
	return &presencev1.HeartbeatResponse{
		LeaseCreated: created,
		ExpiresAt:    timestamppb.New(deadline),
		IntervalMs:   uint32(s.cfg.HeartbeatInterval.Milliseconds()),
	}, nil
}

// ReleaseEdge ends an edge's lease and unbinds its connections.
func (s *Service) ReleaseEdge(ctx context.Context, req *presencev1.ReleaseEdgeRequest) (*presencev1.ReleaseEdgeResponse, error) {
	// Lapse the lease first: should this call die half-way, a sweep finishes the job.
	if err := s.store.lapseLease(ctx, req.GetEdgeId()); err != nil {
		return nil, platform.RedisStatus(ctx, err, "release edge")
	}
	n, err := s.unbindEdge(ctx, req.GetEdgeId(), presencev1.UnbindReason_UNBIND_REASON_EDGE_RELEASED, s.now())
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "release edge")
	}
	return &presencev1.ReleaseEdgeResponse{Unbound: uint32(n)}, nil
}

// UserConnections lists one user's connections, oldest first.
func (s *Service) UserConnections(ctx context.Context, req *presencev1.UserConnectionsRequest) (*presencev1.UserConnectionsResponse, error) {
	conns, err := s.store.userConns(ctx, req.GetUserId())
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "user connections")
	}
	slices.SortFunc(conns, func(a, b binding) int {
		if c := a.BoundAt.Compare(b.BoundAt); c != 0 {
			return c
		}
		return strings.Compare(a.ConnID, b.ConnID)
	})
	resp := &presencev1.UserConnectionsResponse{Connections: make([]*presencev1.Connection, len(conns))}
	for i, c := range conns {
		resp.Connections[i] = &presencev1.Connection{ConnId: c.ConnID, UserId: c.UserID, EdgeId: c.EdgeID, BoundAt: timestamppb.New(c.BoundAt)}
	}
	return resp, nil
}

// OnlineStatus reports several users' online status.
func (s *Service) OnlineStatus(ctx context.Context, req *presencev1.OnlineStatusRequest) (*presencev1.OnlineStatusResponse, error) {
	sts, err := s.store.statuses(ctx, req.GetUserIds())
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "online status")
	}
	now := s.now()
	resp := &presencev1.OnlineStatusResponse{Statuses: make([]*presencev1.UserStatus, len(sts))}
	for i, st := range sts {
		us := &presencev1.UserStatus{UserId: req.GetUserIds()[i], Online: st.Connections > 0, Connections: uint32(st.Connections)}
		switch {
		case us.Online:
			us.LastSeen = timestamppb.New(now)
		case !st.LastSeen.IsZero():
			us.LastSeen = timestamppb.New(st.LastSeen)
		}
		resp.Statuses[i] = us
	}
	return resp, nil
}
