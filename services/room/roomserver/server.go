package roomserver

import (
	"context"
	"log/slog"
	"net"

	"github.com/redis/go-redis/v9"

	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
	"github.com/chatrt/chat/platform"
)

// Run connects to Redis, listens on the configured addresses and serves until ctx is done.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return platform.Run(ctx, cfg.Config, func(ctx context.Context, rdb redis.UniversalClient, grpcLis, metricsLis net.Listener) error {
		return Serve(ctx, cfg, log, rdb, grpcLis, metricsLis)
	})
}

// Serve serves the room service, and runs its ghost cleanup, on the given listeners
// (metricsLis may be nil) until ctx is done.
func Serve(ctx context.Context, cfg Config, log *slog.Logger, rdb redis.UniversalClient, grpcLis, metricsLis net.Listener) error {
	svc := NewService(log, cfg, rdb)
	return platform.ServeService(ctx, log, cfg.Config, rdb, grpcLis, metricsLis, &roomv1.RoomService_ServiceDesc, svc, svc.RunCleanup)
}
