// Package redistest gives tests a real Redis and a key prefix of their own, so tests run in
// parallel against one server without seeing each other's keys.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Addr is the Redis tests use: $CHAT_TEST_REDIS_ADDR, or 127.0.0.1:6379.
func Addr() string {
	if a := os.Getenv("CHAT_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// Client connects to the test Redis, fails the test when it does not answer, and closes the
// client when the test ends.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: Addr(), ContextTimeoutEnabled: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("test redis at %s does not answer: %v", Addr(), err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Prefix returns a key prefix unique to this test run ("t:<random>:"), and deletes every key
// under it when the test ends.
func Prefix(t testing.TB, rdb redis.UniversalClient) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	prefix := "t:" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, k := range Keys(t, ctx, rdb, prefix) {
			rdb.Del(ctx, k)
		}
	})
	return prefix
}

// Keys lists every key that starts with prefix (by SCAN, so the prefix is matched literally
// up to glob characters, which test prefixes never contain).
func Keys(t testing.TB, ctx context.Context, rdb redis.UniversalClient, prefix string) []string {
	t.Helper()
	var out []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		out = append(out, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scan %s*: %v", prefix, err)
	}
	return out
}

// DialRetrier names the goroutine that go-redis leaves behind for a while after a failed dial (it
// retries the dial in the background, even after Close); goleak should not count them.
const DialRetrier = "github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"
