package authserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/redis/go-redis/v9"

	authv1 "github.com/chatrt/chat/gen/chat/auth/v1"
	"github.com/chatrt/chat/platform"
)

// Run connects to Redis, listens on the configured addresses and serves until ctx is done.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return platform.Run(ctx, cfg.Config, func(ctx context.Context, rdb redis.UniversalClient, grpcLis, metricsLis net.Listener) error {
		return Serve(ctx, cfg, log, rdb, grpcLis, metricsLis)
	})
}

// Serve serves the auth service on the given listeners (metricsLis may be nil) until ctx is
// done.
func Serve(ctx context.Context, cfg Config, log *slog.Logger, rdb redis.UniversalClient, grpcLis, metricsLis net.Listener) error {
	svc, err := NewService(log, cfg, rdb)
	if err != nil {
		return fmt.Errorf("auth service: %w", err)
	}
	return platform.ServeService(ctx, log, cfg.Config, rdb, grpcLis, metricsLis, &authv1.AuthService_ServiceDesc, svc)
}
