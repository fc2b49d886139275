package presenceserver

import (
	"flag"
	"time"

	"github.com/chatrt/chat/platform"
)

// Config is the presence service's configuration.
type Config struct {
	platform.Config
	// LeaseTTL is how long an edge's lease lasts after a heartbeat. Default 15s.
	LeaseTTL time.Duration
	// HeartbeatInterval is how often edges are told to heartbeat. Default 5s.
	HeartbeatInterval time.Duration
	// SweepInterval is how often lapsed leases are looked for; an edge's connections are
	// unbound within LeaseTTL + SweepInterval of its last heartbeat. Default 2s.
	SweepInterval time.Duration
	// StreamMaxLen caps the event stream, approximately. Default 100000.
	StreamMaxLen int64
	// LastSeenRetention is how long an offline user's last-seen time is kept. Default 720h.
	LastSeenRetention time.Duration
	// UnbindClaim is how long one caller may take to append an unbind's events before another
	// caller retrying the same unbind appends them instead. Default 5s.
	UnbindClaim time.Duration
}

// RegisterFlags defines the presence service's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs, platform.Defaults{GRPCAddr: "127.0.0.1:9003", MetricsAddr: "127.0.0.1:9103", KeyPrefix: "presence:"})
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 15*time.Second, "how long an edge lease lasts after a heartbeat")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", 5*time.Second, "how often edges are told to heartbeat")
	fs.DurationVar(&c.SweepInterval, "sweep-interval", 2*time.Second, "how often lapsed edge leases are swept")
	fs.Int64Var(&c.StreamMaxLen, "events-max-len", 100000, "approximate cap of the presence event stream")
	fs.DurationVar(&c.LastSeenRetention, "last-seen-retention", 30*24*time.Hour, "how long an offline user's last-seen time is kept")
	fs.DurationVar(&c.UnbindClaim, "unbind-claim", 5*time.Second, "time one caller has to append an unbind's events before a retry does")
}

// ConfigFromArgs parses the command line (and PRESENCE_* environment variables).
func ConfigFromArgs(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("presence", flag.ContinueOnError)
	c.RegisterFlags(fs)
	err := platform.ParseFlags(fs, args, "PRESENCE")
	return c, err
}
