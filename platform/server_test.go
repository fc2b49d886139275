package platform

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/chatrt/chat/platform/redistest"
)

// testService panics in UnaryCall and blocks in EmptyCall until released.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	release chan struct{}
	entered chan struct{}
}

func (s *testService) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	panic("boom")
}

func (s *testService) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	s.entered <- struct{}{}
	select {
	case <-s.release:
		return &testgrpc.Empty{}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func serveTest(t *testing.T, cfg Config, logOut io.Writer) (testgrpc.TestServiceClient, *testService, context.CancelFunc, chan error) {
	t.Helper()
	rdb := redistest.Client(t)
	log := slog.New(slog.NewTextHandler(logOut, nil))
	srv := NewServer(log, cfg)
	svc := &testService{release: make(chan struct{}), entered: make(chan struct{}, 1)}
	srv.Register(&testgrpc.TestService_ServiceDesc, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis, nil, rdb) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		<-done
	})
	return testgrpc.NewTestServiceClient(conn), svc, cancel, done
}

func TestPanicBecomesInternalWithStackLogged(t *testing.T) {
	var logs syncBuffer
	client, _, _, _ := serveTest(t, Config{}, &logs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if got := status.Code(err); got != codes.Internal {
		t.Fatalf("got %v, want Internal", err)
	}
	if strings.Contains(status.Convert(err).Message(), "boom") {
		t.Fatalf("the panic value leaked to the caller: %v", err)
	}
	if !strings.Contains(logs.String(), "boom") || !strings.Contains(logs.String(), "server_test.go") {
		t.Fatalf("the log lacks the panic and its stack:\n%s", logs.String())
	}
	// The server survives.
	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("second call: %v", err)
	}
}

func TestGracefulStopWaitsThenCuts(t *testing.T) {
	tests := []struct {
		name     string
		release  bool
		wantCode codes.Code
	}{
		{"running call finishes", true, codes.OK},
		{"call past the deadline is cut", false, codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, svc, stop, done := serveTest(t, Config{ShutdownTimeout: 300 * time.Millisecond}, io.Discard)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			callErr := make(chan error, 1)
			go func() {
				_, err := client.EmptyCall(ctx, &testgrpc.Empty{})
				callErr <- err
			}()
			<-svc.entered
			began := time.Now()
			stop()
			if tc.release {
				close(svc.release)
			}
			if err := <-done; err != nil {
				t.Fatalf("serve returned %v", err)
			}
			if took := time.Since(began); took > 2*time.Second {
				t.Fatalf("stop took %v with a 300ms shutdown timeout", took)
			}
			if got := status.Code(<-callErr); got != tc.wantCode {
				t.Fatalf("call ended with %v, want %v", got, tc.wantCode)
			}
			done <- nil // let the cleanup's wait return
		})
	}
}
