package edgeserver

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"os"
	"strings"
	"time"

	"github.com/chatrt/chat/platform"
)

// Config is the edge's configuration.
type Config struct {
	// HTTPAddr is where browsers connect (/ws, /ws/legacy) and /metrics is served.
	// Default 127.0.0.1:8080.
	HTTPAddr string
	// EdgeID names this edge in presence and prefixes its connection ids; it must be unique
	// among running edges. Default: host name and a random suffix.
	EdgeID string
	// AuthAddr, RoomAddr, PresenceAddr are the services' gRPC addresses.
	AuthAddr, RoomAddr, PresenceAddr string
	// CallTimeout bounds every gRPC call. Default 5s.
	CallTimeout time.Duration
	// Redis is where room events are subscribed to; RoomKeyPrefix is the room service's key
	// prefix (which names the channels). Default "room:".
	Redis         platform.RedisConfig
	RoomKeyPrefix string
	// AllowedOrigins is a comma-separated list of exact origins (scheme://host[:port]) allowed
	// besides the edge's own host. Default empty.
	AllowedOrigins string
	// Legacy enables /ws/legacy, the seed tutorial's unauthenticated protocol. Default off.
	Legacy bool
	// Pprof serves Go's profiles on /debug/pprof/ (CPU, heap, ...). Default off.
	Pprof bool

	// MaxFrameBytes is the largest inbound frame; larger closes with 1009. Default 65536.
	MaxFrameBytes int64
	// AuthTimeout closes sockets that have not authenticated in time. Default 10s.
	AuthTimeout time.Duration
	// PingInterval is how often the edge pings; PongTimeout is how long a silent peer lives.
	// Defaults 25s and 60s.
	PingInterval, PongTimeout time.Duration
	// WriteTimeout bounds one write to a socket: a write that blocks fails after between half
	// and all of it (a busy socket's deadline is renewed once half used). Default 10s.
	WriteTimeout time.Duration
	// WriteDelay is how long a connection's writer lets frames gather after the first one
	// arrives before it writes them all with one syscall: a little latency for far fewer
	// syscalls in busy rooms. Default 0: write at once (see docs/benchmarks.md).
	WriteDelay time.Duration
	// OutboundQueueBytes bounds a connection's queued outbound frames; a full queue closes the
	// connection with 1008 "slow consumer". Default 1 MiB.
	OutboundQueueBytes int
	// ConnRate and ConnBurst: commands per second (token bucket) of one connection.
	// Defaults 20 and 40. UserRate and UserBurst: the same for all of a user's connections on
	// this edge. Defaults 40 and 80.
	ConnRate, UserRate   float64
	ConnBurst, UserBurst int
	// AbuseLimit: this many rate-limited commands in a row close the connection with 1008.
	// Default 50.
	AbuseLimit int
	// JoinMembers and WhoMembers cap the member lists of join and who. Defaults 100 and 1000.
	JoinMembers, WhoMembers int
	// HeartbeatInterval is how often the presence lease is renewed; presence's answer may
	// shorten it. Default 5s.
	HeartbeatInterval time.Duration
	// ShutdownTimeout bounds a graceful stop. Default 10s.
	ShutdownTimeout time.Duration
	// LogLevel and LogFormat configure the log.
	LogLevel, LogFormat string
}

// LogSettings returns the configured log level and format.
func (c Config) LogSettings() (level, format string) { return c.LogLevel, c.LogFormat }

// RegisterFlags defines the edge's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address (WebSocket endpoints and /metrics)")
	fs.StringVar(&c.EdgeID, "edge-id", defaultEdgeID(), "unique id of this edge (default: host name and a random suffix)")
	fs.StringVar(&c.AuthAddr, "auth-addr", "127.0.0.1:9001", "auth service gRPC address")
	fs.StringVar(&c.RoomAddr, "room-addr", "127.0.0.1:9002", "room service gRPC address")
	fs.StringVar(&c.PresenceAddr, "presence-addr", "127.0.0.1:9003", "presence service gRPC address")
	fs.DurationVar(&c.CallTimeout, "call-timeout", 5*time.Second, "deadline of every gRPC call")
	c.Redis.RegisterFlags(fs, "edge:")
	fs.StringVar(&c.RoomKeyPrefix, "room-key-prefix", "room:", "the room service's Redis key prefix (names the event channels)")
	fs.StringVar(&c.AllowedOrigins, "allowed-origins", "", "comma-separated exact origins allowed besides the edge's own host")
	fs.BoolVar(&c.Legacy, "legacy", false, "serve the seed tutorial's protocol on /ws/legacy")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's CPU and heap profiles on /debug/pprof/")
	fs.Int64Var(&c.MaxFrameBytes, "max-frame-bytes", 64<<10, "largest inbound frame (larger: close 1009)")
	fs.DurationVar(&c.AuthTimeout, "auth-timeout", 10*time.Second, "close sockets not authenticated within this time")
	fs.DurationVar(&c.PingInterval, "ping-interval", 25*time.Second, "how often the edge pings each socket")
	fs.DurationVar(&c.PongTimeout, "pong-timeout", 60*time.Second, "close a socket silent for this long")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "deadline of one socket write")
	fs.DurationVar(&c.WriteDelay, "write-delay", 0, "how long queued frames may gather before one write (0: write at once)")
	fs.IntVar(&c.OutboundQueueBytes, "outbound-queue-bytes", 1<<20, "bound of a socket's outbound queue (full: close 1008 slow consumer)")
	fs.Float64Var(&c.ConnRate, "conn-rate", 20, "commands per second allowed per connection")
	fs.IntVar(&c.ConnBurst, "conn-burst", 40, "command burst allowed per connection")
	fs.Float64Var(&c.UserRate, "user-rate", 40, "commands per second allowed per user on this edge")
	fs.IntVar(&c.UserBurst, "user-burst", 80, "command burst allowed per user on this edge")
	fs.IntVar(&c.AbuseLimit, "abuse-limit", 50, "rate-limited commands in a row that close the socket (1008)")
	fs.IntVar(&c.JoinMembers, "join-members", 100, "most members listed in a join reply")
	fs.IntVar(&c.WhoMembers, "who-members", 1000, "most members listed in a who reply")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", 5*time.Second, "how often the presence lease is renewed")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "graceful stop deadline")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
}

// ConfigFromArgs parses the command line (and EDGE_* environment variables).
func ConfigFromArgs(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	c.RegisterFlags(fs)
	err := platform.ParseFlags(fs, args, "EDGE")
	return c, err
}

func defaultEdgeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "edge"
	}
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, host)
	if len(host) > 40 {
		host = host[:40]
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// origins parses AllowedOrigins.
func (c Config) origins() map[string]bool {
	out := map[string]bool{}
	for _, o := range strings.Split(c.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out[strings.ToLower(o)] = true
		}
	}
	return out
}

// redisConfig is the Redis configuration, with the connections named after the edge.
func (c Config) redisConfig() platform.RedisConfig {
	r := c.Redis
	r.ClientName = "chat-" + c.EdgeID
	return r
}
