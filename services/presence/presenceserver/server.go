package presenceserver

import (
	"context"
	"log/slog"
	"net"
	"sync"

	"github.com/redis/go-redis/v9"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	"github.com/chatrt/chat/platform"
)

// Run connects to Redis, listens on the configured addresses and serves until ctx is done.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	rdb, err := platform.NewRedis(cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	grpcLis, metricsLis, err := cfg.Listen()
	if err != nil {
		return err
	}
	return Serve(ctx, cfg, log, rdb, grpcLis, metricsLis)
}

// Serve serves the presence service and runs its lease sweeper on the given listeners
// (metricsLis may be nil) until ctx is done.
func Serve(ctx context.Context, cfg Config, log *slog.Logger, rdb redis.UniversalClient, grpcLis, metricsLis net.Listener) error {
	svc := NewService(log, cfg, rdb)
	srv := platform.NewServer(log, cfg.Config)
	srv.Register(&presencev1.PresenceService_ServiceDesc, svc)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		svc.RunSweeper(ctx)
	}()
	log.Info("presence service listening", "grpc", grpcLis.Addr().String(), "metrics", platform.AddrOf(metricsLis))
	err := srv.Serve(ctx, grpcLis, metricsLis, rdb)
	cancel()
	wg.Wait()
	return err
}
