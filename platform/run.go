package platform

import (
	"context"
	"log/slog"
	"net"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
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

// ServeService serves one gRPC service implementation (desc, impl) with the platform's server
// on the given listeners (metricsLis may be nil), running workers alongside, until ctx is done.
func ServeService(ctx context.Context, log *slog.Logger, cfg Config, rdb redis.UniversalClient, grpcLis, metricsLis net.Listener,
	desc *grpc.ServiceDesc, impl any, workers ...func(context.Context)) error {
	srv := NewServer(log, cfg)
	srv.Register(desc, impl)
	for _, w := range workers {
		srv.AddWorker(w)
	}
	log.Info("serving "+desc.ServiceName, "grpc", grpcLis.Addr().String(), "metrics", AddrOf(metricsLis))
	return srv.Serve(ctx, grpcLis, metricsLis, rdb)
}
