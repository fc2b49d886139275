package presenceserver

import (
	"context"
	"fmt"
	"time"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	"github.com/chatrt/chat/platform"
)

// sweepBatch is how many lapsed edges one sweep handles; the rest wait for the next.
const sweepBatch = 100

// RunSweeper sweeps lapsed edge leases every SweepInterval until ctx is done. Several presence
// replicas may sweep at once: unbinding is idempotent and each unbind's events are appended by
// exactly one of them (see unbind_user.lua).
func (s *Service) RunSweeper(ctx context.Context) {
	platform.Every(ctx, s.cfg.SweepInterval, func() {
		sctx, cancel := context.WithTimeout(ctx, 4*s.cfg.SweepInterval+10*time.Second)
		defer cancel()
		if err := s.Sweep(sctx); err != nil && ctx.Err() == nil {
			s.log.Warn("lease sweep failed; retrying next interval", "err", err)
		}
	})
}

// Sweep unbinds the connections of every edge whose lease has lapsed. A lapsed lease is kept
// (and swept again) for one more lease TTL, so that a Bind that was in flight when the lease
// lapsed is swept too; then it is removed, unless the edge renewed it meanwhile.
func (s *Service) Sweep(ctx context.Context) error {
	now := s.now()
	edges, err := s.store.lapsedEdges(ctx, now, sweepBatch)
	if err != nil {
		return err
	}
	for _, edge := range edges {
		n, err := s.unbindEdge(ctx, edge, presencev1.UnbindReason_UNBIND_REASON_LEASE_EXPIRED, now)
		if err != nil {
			return fmt.Errorf("sweep edge %q: %w", edge, err)
		}
		if n > 0 {
			s.log.Info("edge lease lapsed; connections unbound", "edge", edge, "connections", n)
		}
		if _, err := s.store.endLease(ctx, edge, now.Add(-s.cfg.LeaseTTL)); err != nil {
			return fmt.Errorf("sweep edge %q: %w", edge, err)
		}
	}
	return nil
}

// unbindEdge unbinds every connection of an edge and reports how many this call unbound.
func (s *Service) unbindEdge(ctx context.Context, edgeID string, reason presencev1.UnbindReason, now time.Time) (int, error) {
	conns, err := s.store.edgeConns(ctx, edgeID)
	if err != nil {
		return 0, err
	}
	bs := make([]binding, 0, len(conns))
	for conn, user := range conns {
		bs = append(bs, binding{ConnID: conn, UserID: user, EdgeID: edgeID})
	}
	n := 0
	for from := 0; from < len(bs); from += presencev1.MaxBatch {
		chunk := bs[from:min(from+presencev1.MaxBatch, len(bs))]
		changes, errs := s.unbind(ctx, chunk, reason)
		for i, ch := range changes {
			if errs[i] != nil {
				return n, errs[i]
			}
			if ch.Changed {
				n++
			}
		}
	}
	return n, nil
}
