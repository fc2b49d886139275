package roomserver

import (
	"flag"
	"time"

	"github.com/chatrt/chat/platform"
)

// Config is the room service's configuration.
type Config struct {
	platform.Config
	// HistoryCap is how many messages a room's history keeps. Default 1000.
	HistoryCap int
	// HistoryIdleTTL is how long a room's history and sequence outlive its last message.
	// Default 24h.
	HistoryIdleTTL time.Duration
	// DedupWindow is how long a client_msg_id is remembered. Default 5m.
	DedupWindow time.Duration
	// PresenceEvents is the key of the presence event stream, whose CONNECTION_UNBOUND events
	// take the connections of dead edges out of their rooms. Default "presence:events".
	PresenceEvents string
	// CleanupGroup is the consumer group the room replicas share on that stream.
	// Default "room-cleanup".
	CleanupGroup string
	// CleanupClaimIdle is how long an event may stay unacknowledged (its consumer died) before
	// another replica takes it over. Default 30s.
	CleanupClaimIdle time.Duration
}

// RegisterFlags defines the room service's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs, platform.Defaults{GRPCAddr: "127.0.0.1:9002", MetricsAddr: "127.0.0.1:9102", KeyPrefix: "room:"})
	fs.IntVar(&c.HistoryCap, "history-cap", 1000, "messages kept in a room's history")
	fs.DurationVar(&c.HistoryIdleTTL, "history-idle-ttl", 24*time.Hour, "how long a room's history outlives its last message")
	fs.DurationVar(&c.DedupWindow, "dedup-window", 5*time.Minute, "how long a client_msg_id is remembered")
	fs.StringVar(&c.PresenceEvents, "presence-events", "presence:events", "key of the presence event stream (its CONNECTION_UNBOUND events clean up dead connections)")
	fs.StringVar(&c.CleanupGroup, "cleanup-group", "room-cleanup", "consumer group of the room replicas on the presence event stream")
	fs.DurationVar(&c.CleanupClaimIdle, "cleanup-claim-idle", 30*time.Second, "idle time after which another replica takes over an unacknowledged presence event")
}

// ConfigFromArgs parses the command line (and ROOM_* environment variables).
func ConfigFromArgs(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("room", flag.ContinueOnError)
	c.RegisterFlags(fs)
	err := platform.ParseFlags(fs, args, "ROOM")
	return c, err
}
