package platform

import (
	"context"
	"net"

	"github.com/redis/go-redis/v9"
)

// ServeFunc serves a service on a Redis client and listeners (metricsLis may be nil) until
// ctx is done.
type ServeFunc func(ctx context.Context, rdb redis.UniversalClient, grpcLis, metricsLis net.Listener) error

// Run connects to Redis as cfg.Redis says, opens cfg's listeners, and serves with serve until
// ctx is done.
func Run(ctx context.Context, cfg Config, serve ServeFunc) error {
	rdb, err := NewRedis(cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	grpcLis, metricsLis, err := cfg.Listen()
	if err != nil {
		return err
	}
	return serve(ctx, rdb, grpcLis, metricsLis)
}
