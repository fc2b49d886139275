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
	now := s.now()
	b := binding{ConnID: req.GetConnId(), UserID: req.GetUserId(), Username: req.GetUsername(), EdgeID: req.GetEdgeId(), BoundAt: now}
	// The edge index is written with the lease check, in one round trip; without a live lease
	// the entry this call added is taken back.
	deadline, leased, owner, added, err := s.store.claimEdgeConn(ctx, b.EdgeID, b.ConnID, b.UserID)
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "bind")
	}
	if !leased || !deadline.After(now) {
		if added {
			if err := s.store.dropEdgeConn(ctx, b.EdgeID, b.ConnID); err != nil {
				return nil, platform.RedisStatus(ctx, err, "bind")
			}
		}
		return nil, status.Errorf(codes.FailedPrecondition, "edge %q has no live lease: call Heartbeat first", req.GetEdgeId())
	}
	if owner != b.UserID {
		return nil, status.Error(codes.FailedPrecondition, "connection id is bound to another user")
	}
	claimed, err := s.store.claimConn(ctx, b)
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "bind")
	}
	if claimed < 0 {
		if added {
			if err := s.store.dropEdgeConn(ctx, b.EdgeID, b.ConnID); err != nil {
				return nil, platform.RedisStatus(ctx, err, "bind")
			}
		}
		return nil, status.Error(codes.FailedPrecondition, "connection id is bound to another user or edge")
	}

	ch, err := s.store.bindUser(ctx, b)
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "bind")
	}
	if ch.Changed {
		events := []*presencev1.PresenceEvent{s.event(presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_BOUND, b, ch, now)}
		if ch.Flipped {
			events = append(events, s.event(presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_USER_ONLINE, b, ch, now))
		}
		if err := s.store.appendEvents(ctx, events...); err != nil {
			return nil, platform.RedisStatus(ctx, err, "bind")
		}
	}
	return &presencev1.BindResponse{UserCameOnline: ch.Flipped, Version: ch.Version}, nil
}

// Unbind removes one connection.
func (s *Service) Unbind(ctx context.Context, req *presencev1.UnbindRequest) (*presencev1.UnbindResponse, error) {
	b, ok, err := s.store.connRecord(ctx, req.GetConnId())
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "unbind")
	}
	if !ok {
		return &presencev1.UnbindResponse{}, nil
	}
	ch, err := s.unbind(ctx, b, presencev1.UnbindReason_UNBIND_REASON_CLOSED)
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "unbind")
	}
	return &presencev1.UnbindResponse{Unbound: ch.Changed, UserWentOffline: ch.Flipped}, nil
}

// unbind removes a connection from its user, appends the events, and clears the indexes. It is
// idempotent; see unbind_user.lua for how a retry after a failure still appends the events.
func (s *Service) unbind(ctx context.Context, b binding, reason presencev1.UnbindReason) (userChange, error) {
	now := s.now()
	ch, err := s.store.unbindUser(ctx, b.UserID, b.ConnID, now, reason, s.cfg.UnbindClaim, s.cfg.LastSeenRetention)
	if err != nil {
		return userChange{}, err
	}
	if ch.Busy {
		// Another caller is finishing this very unbind.
		return userChange{}, nil
	}
	if ch.Changed {
		b.Username = ch.Username
		events := []*presencev1.PresenceEvent{s.event(presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_UNBOUND, b, ch, now)}
		if ch.Flipped {
			events = append(events, s.event(presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_USER_OFFLINE, b, ch, now))
		}
		if err := s.store.appendEvents(ctx, events...); err != nil {
			return userChange{}, err
		}
	}
	if err := s.store.finishUnbind(ctx, b.UserID, b.ConnID, b.EdgeID); err != nil {
		return userChange{}, err
	}
	return ch, nil
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
