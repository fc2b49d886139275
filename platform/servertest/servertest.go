// Package servertest serves a service on the real platform server over loopback TCP for tests.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/platform/redistest"
)

// Server is a running test server.
type Server struct {
	// Conn is a client connection to it.
	Conn *grpc.ClientConn
	// MetricsAddr is the address of its /metrics endpoint.
	MetricsAddr string
}

// Serve starts a platform server with cfg on 127.0.0.1, lets register add services, and stops
// it (checking that it stops cleanly within 5s) when the test ends. rdb is what health pings.
func Serve(t testing.TB, cfg platform.Config, rdb platform.Pinger, register func(*platform.Server)) *Server {
	t.Helper()
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := platform.NewServer(Logger(), cfg)
	register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, grpcLis, metricsLis, rdb) }()
	conn, err := grpc.NewClient(grpcLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("server did not stop within 5s")
		}
	})
	return &Server{Conn: conn, MetricsAddr: metricsLis.Addr().String()}
}

// Logger discards everything; set CHAT_TEST_LOG=1 to see the services' logs.
func Logger() *slog.Logger {
	if os.Getenv("CHAT_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// DeadAddr is a loopback address where nothing listens.
func DeadAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Ctx is a context for one call, canceled when the test ends, with a 10s deadline.
func Ctx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// WantCode fails the test unless err has the gRPC code want.
func WantCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got code %v (%v), want %v", got, err, want)
	}
}

// Config is the platform configuration tests use: the test Redis under keyPrefix, fast health
// checks and a short shutdown.
func Config(keyPrefix string) platform.Config {
	return platform.Config{
		ShutdownTimeout: 2 * time.Second,
		HealthInterval:  50 * time.Millisecond,
		StreamWorkers:   4,
		Redis:           platform.RedisConfig{Addrs: redistest.Addr(), KeyPrefix: keyPrefix, Timeout: 2 * time.Second},
	}
}

// Redis builds a service's Redis client from cfg and closes it when the test ends.
func Redis(t testing.TB, cfg platform.RedisConfig) redis.UniversalClient {
	t.Helper()
	rdb, err := platform.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}
