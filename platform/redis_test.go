package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRedisStatus(t *testing.T) {
	live := context.Background()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want codes.Code
	}{
		{"eof", live, fmt.Errorf("load: %w", io.EOF), codes.Unavailable},
		{"pool timeout", live, redis.ErrPoolTimeout, codes.Unavailable},
		{"loading", live, errors.New("LOADING Redis is loading the dataset in memory"), codes.Unavailable},
		{"script error", live, errors.New("ERR Error running script"), codes.Internal},
		{"caller canceled", canceled, io.EOF, codes.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(RedisStatus(tc.ctx, tc.err, "op")); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if RedisStatus(live, nil, "op") != nil {
		t.Fatal("nil error converted to a status")
	}
}

func TestNewRedisHasDeadlines(t *testing.T) {
	if _, err := NewRedis(RedisConfig{Addrs: " , "}); err == nil {
		t.Fatal("empty address list accepted")
	}
	// A blackholed address must fail within the timeout, not hang.
	rdb, err := NewRedis(RedisConfig{Addrs: "127.0.0.1:1", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	start := time.Now()
	err = rdb.Ping(context.Background()).Err()
	if err == nil || !IsRedisUnavailable(err) {
		t.Fatalf("ping of a closed port: %v, want an unavailable error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("ping took %v", d)
	}
}
