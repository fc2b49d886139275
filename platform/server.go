package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/validator"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Server is a gRPC server with the platform's interceptors, health service, reflection and a
// Prometheus registry. Register services on GRPC(), then call Serve.
type Server struct {
	log      *slog.Logger
	cfg      Config
	grpc     *grpc.Server
	health   *health.Server
	registry *prometheus.Registry
	metrics  *grpcprom.ServerMetrics
	services []string
	workers  []func(context.Context)
}

// NewServer builds a Server. Every call goes through, outermost first: Prometheus metrics,
// logging (call metadata only, never payloads, so no secrets reach the log), panic recovery
// (Internal to the caller, the stack to the log), and request validation (messages with a
// Validate method are checked; a failure is InvalidArgument).
func NewServer(log *slog.Logger, cfg Config) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(metrics)

	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		// Successful health checks arrive every second from orchestrators: keep them at debug.
		logging.WithLevels(func(c codes.Code) logging.Level {
			if c == codes.OK {
				return logging.LevelDebug
			}
			return logging.DefaultServerCodeToLevel(c)
		}),
	}
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in grpc handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})

	maxRecv, maxSend := cfg.MaxRecvMsgBytes, cfg.MaxSendMsgBytes
	if maxRecv <= 0 {
		maxRecv = 1 << 20
	}
	if maxSend <= 0 {
		maxSend = 32 << 20
	}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			metrics.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(logger, logOpts...),
			recovery.UnaryServerInterceptor(recoverOpt),
			validator.UnaryServerInterceptor(),
		),
		grpc.ChainStreamInterceptor(
			metrics.StreamServerInterceptor(),
			logging.StreamServerInterceptor(logger, logOpts...),
			recovery.StreamServerInterceptor(recoverOpt),
			validator.StreamServerInterceptor(),
		),
		grpc.NumStreamWorkers(uint32(max(cfg.StreamWorkers, 0))),
		grpc.MaxRecvMsgSize(maxRecv),
		grpc.MaxSendMsgSize(maxSend),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 15 * time.Minute,
			Time:              30 * time.Second,
			Timeout:           10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
	)
	hs := health.NewServer()
	// Not serving until the first Redis ping answers.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)

	return &Server{log: log, cfg: cfg, grpc: gs, health: hs, registry: reg, metrics: metrics}
}

// Register adds a service implementation, like grpc.Server.RegisterService, and makes its name
// known to the health service.
func (s *Server) Register(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
	s.services = append(s.services, desc.ServiceName)
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

// AddWorker adds a background task that Serve runs for as long as it serves: work is given a
// context that ends when serving ends, and Serve waits for it to return.
func (s *Server) AddWorker(work func(ctx context.Context)) { s.workers = append(s.workers, work) }

// Registry is the service's Prometheus registry, for its own metrics.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Serve serves gRPC on grpcLis and, when metricsLis is not nil, /metrics on metricsLis, and
// keeps the health status in step with Redis (SERVING while a ping answers). It returns when
// ctx is done, after a graceful stop bounded by the configured shutdown timeout, or when a
// listener fails. It closes both listeners.
func (s *Server) Serve(ctx context.Context, grpcLis, metricsLis net.Listener, rdb Pinger) error {
	s.metrics.InitializeMetrics(s.grpc)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)

	for _, work := range append([]func(context.Context){func(ctx context.Context) { s.watchHealth(ctx, rdb) }}, s.workers...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(ctx)
		}()
	}

	var hs *http.Server
	if metricsLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve metrics: %w", err)
			}
		}()
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.grpc.Serve(grpcLis); err != nil {
			errc <- fmt.Errorf("serve grpc: %w", err)
		}
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	s.shutdown(hs)
	wg.Wait()
	return err
}

// shutdown stops gracefully: health turns NOT_SERVING so balancers drain us, running calls may
// finish until the shutdown timeout, then everything still open is cut.
func (s *Server) shutdown(hs *http.Server) {
	s.health.Shutdown()
	timeout := s.cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		s.log.Warn("graceful stop timed out; cutting remaining calls", "timeout", timeout)
		s.grpc.Stop()
		<-done
	}
	if hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx) // The metrics endpoint has nothing worth draining.
	}
}

// watchHealth pings Redis every HealthInterval and sets every registered service, and the
// overall "" entry, to SERVING while it answers and NOT_SERVING while it does not.
func (s *Server) watchHealth(ctx context.Context, rdb Pinger) {
	interval := s.cfg.HealthInterval
	if interval <= 0 {
		interval = time.Second
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		st := healthpb.HealthCheckResponse_SERVING
		if err := PingRedis(ctx, rdb, interval); err != nil {
			if ctx.Err() != nil {
				return
			}
			st = healthpb.HealthCheckResponse_NOT_SERVING
			if last != st {
				s.log.Warn("redis unreachable; health NOT_SERVING", "err", err)
			}
		} else if last == healthpb.HealthCheckResponse_NOT_SERVING {
			s.log.Info("redis reachable again; health SERVING")
		}
		if st != last {
			s.health.SetServingStatus("", st)
			for _, name := range s.services {
				s.health.SetServingStatus(name, st)
			}
			last = st
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
