package platform

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
)

// Config holds the settings every service shares. Register them on a FlagSet with RegisterFlags.
type Config struct {
	// GRPCAddr is the gRPC listen address; the default depends on the service.
	GRPCAddr string
	// MetricsAddr is the HTTP listen address of /metrics; empty disables it. The default depends
	// on the service.
	MetricsAddr string
	// ShutdownTimeout bounds a graceful stop; after it, remaining calls are cut. Default 10s.
	ShutdownTimeout time.Duration
	// MaxRecvMsgBytes is the largest gRPC request accepted. Default 1 MiB.
	MaxRecvMsgBytes int
	// MaxSendMsgBytes is the largest gRPC response sent. Default 32 MiB.
	MaxSendMsgBytes int
	// StreamWorkers is how many goroutines serve calls and keep their grown stacks between
	// calls (a fresh goroutine per call grows its stack again every time); calls beyond them get
	// a goroutine of their own. 0 (the default): a goroutine per call. Measured with chatbench:
	// 16 workers spared the room service the 14% of its CPU it spent growing stacks under
	// many small publishes, but made connections slower to set up (2,544 -> 2,358 conn/s).
	StreamWorkers int
	// HealthInterval is how often Redis is pinged to decide the health status. Default 1s.
	HealthInterval time.Duration
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string
	// LogFormat is text or json. Default text.
	LogFormat string
	// Redis configures the Redis client.
	Redis RedisConfig
}

// Defaults are the per-service defaults of a Config.
type Defaults struct {
	GRPCAddr    string
	MetricsAddr string
	KeyPrefix   string
}

// RegisterFlags defines the shared flags on fs, with d's per-service defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet, d Defaults) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", d.GRPCAddr, "gRPC listen address")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", d.MetricsAddr, "HTTP listen address of /metrics (empty: off)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "graceful stop deadline; calls still running after it are cut")
	fs.IntVar(&c.MaxRecvMsgBytes, "grpc-max-recv-bytes", 1<<20, "largest gRPC request accepted, in bytes")
	fs.IntVar(&c.MaxSendMsgBytes, "grpc-max-send-bytes", 32<<20, "largest gRPC response sent, in bytes")
	fs.IntVar(&c.StreamWorkers, "grpc-stream-workers", 0, "goroutines that serve calls and keep their stacks between calls (0: one goroutine per call)")
	fs.DurationVar(&c.HealthInterval, "health-interval", time.Second, "how often Redis is pinged for the health status")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	c.Redis.RegisterFlags(fs, d.KeyPrefix)
}

// ParseFlags parses args into fs. A flag not given on the command line falls back to the
// environment variable envPrefix_FLAG_NAME (for example AUTH_REDIS_ADDRS for -redis-addrs with
// prefix AUTH). -h prints every flag with its variable and default and returns flag.ErrHelp.
func ParseFlags(fs *flag.FlagSet, args []string, envPrefix string) error {
	fs.Usage = func() { PrintUsage(fs.Output(), fs, envPrefix) }
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix(envPrefix)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("parse flags: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return nil
}

// PrintUsage writes one paragraph per flag: name, environment variable, meaning and default.
func PrintUsage(w io.Writer, fs *flag.FlagSet, envPrefix string) {
	fmt.Fprintf(w, "Usage of %s:\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		env := envPrefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(f.Name))
		fmt.Fprintf(w, "  -%s (env %s)\n    \t%s (default %q)\n", f.Name, env, f.Usage, f.DefValue)
	})
}
