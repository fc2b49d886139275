package platform

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RedisConfig configures the Redis client of a service.
type RedisConfig struct {
	// Addrs is a comma-separated list of host:port. One address: a single Redis; several: a
	// Redis Cluster. Default 127.0.0.1:6379.
	Addrs string
	// Username and Password authenticate (ACL); empty by default.
	Username string
	Password string
	// DB selects the database of a single Redis. Default 0.
	DB int
	// KeyPrefix starts every key and channel of the service, so services sharing a Redis never
	// touch each other's keys. The default is the service's name and a colon.
	KeyPrefix string
	// Timeout bounds every Redis command (dial, read, write) that has no earlier deadline.
	// Default 2s.
	Timeout time.Duration
	// ClientName names the connections (CLIENT SETNAME), for operators; set by code, not flags.
	ClientName string
}

// RegisterFlags defines the Redis flags on fs.
func (c *RedisConfig) RegisterFlags(fs *flag.FlagSet, keyPrefix string) {
	fs.StringVar(&c.Addrs, "redis-addrs", "127.0.0.1:6379", "comma-separated Redis addresses (several: Redis Cluster)")
	fs.StringVar(&c.Username, "redis-username", "", "Redis ACL username")
	fs.StringVar(&c.Password, "redis-password", "", "Redis password")
	fs.IntVar(&c.DB, "redis-db", 0, "Redis database (single Redis only)")
	fs.StringVar(&c.KeyPrefix, "redis-key-prefix", keyPrefix, "prefix of every Redis key and channel of this service")
	fs.DurationVar(&c.Timeout, "redis-timeout", 2*time.Second, "deadline of a Redis command that has no earlier one")
}

// NewRedis builds a go-redis UniversalClient from c: a single-node client for one address, a
// cluster client for several. Context deadlines are honoured, and every command has a deadline
// (c.Timeout when the context has none), so a dead Redis never hangs a caller.
func NewRedis(c RedisConfig) (redis.UniversalClient, error) {
	var addrs []string
	for _, a := range strings.Split(c.Addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("no redis address given")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	opts := &redis.UniversalOptions{
		Addrs:                 addrs,
		Username:              c.Username,
		Password:              c.Password,
		ClientName:            c.ClientName,
		DB:                    c.DB,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
	}
	if len(addrs) > 1 {
		// Several addresses mean a cluster: the DB is not used there.
		opts.IsClusterMode = true
		opts.DB = 0
	}
	return redis.NewUniversalClient(opts), nil
}

// RedisStatus converts an error from Redis into a gRPC status error for the boundary: the
// caller's own cancellation or deadline keeps its code; an unreachable or not-ready Redis is
// Unavailable; anything else is Internal. what names the operation, as in "register user".
func RedisStatus(ctx context.Context, err error, what string) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	if IsRedisUnavailable(err) {
		return status.Errorf(codes.Unavailable, "%s: storage unavailable", what)
	}
	return status.Errorf(codes.Internal, "%s: storage error", what)
}

// IsRedisUnavailable tells whether err means Redis could not be reached or could not serve
// (network errors, timeouts, a closed or exhausted pool, a loading or read-only node, a cluster
// that is down), as opposed to an error in the command itself.
func IsRedisUnavailable(err error) bool {
	var netErr net.Error
	switch {
	case errors.As(err, &netErr),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, redis.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted):
		return true
	}
	msg := err.Error()
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// Pinger is what the health check needs of a Redis client.
type Pinger interface {
	Ping(ctx context.Context) *redis.StatusCmd
}

// PingRedis checks that Redis answers, within timeout.
func PingRedis(ctx context.Context, p Pinger, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := p.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}
