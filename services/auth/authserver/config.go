package authserver

import (
	"flag"
	"runtime"
	"time"

	"github.com/chatrt/chat/platform"
)

// Config is the auth service's configuration.
type Config struct {
	platform.Config
	// TokenTTL is how long a token stays valid after login. Default 24h.
	TokenTTL time.Duration
	// HashConcurrency bounds how many password hashes run at once. Default: the number of CPUs.
	HashConcurrency int
	// HashWait is how long a call may wait for a hashing slot before ResourceExhausted.
	// Default 3s.
	HashWait time.Duration
	// MaxUserFailures is how many failed logins of one username within FailureWindow throttle
	// that username until the window ends. Default 10.
	MaxUserFailures int
	// MaxAddrFailures is the same for one client address. Default 100.
	MaxAddrFailures int
	// FailureWindow is the period failed logins are counted over, and the cool-down. Default 15m.
	FailureWindow time.Duration
}

// RegisterFlags defines the auth service's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs, platform.Defaults{GRPCAddr: "127.0.0.1:9001", MetricsAddr: "127.0.0.1:9101", KeyPrefix: "auth:"})
	fs.DurationVar(&c.TokenTTL, "token-ttl", 24*time.Hour, "how long a token stays valid after login")
	fs.IntVar(&c.HashConcurrency, "hash-concurrency", runtime.NumCPU(), "most password hashes computed at once")
	fs.DurationVar(&c.HashWait, "hash-wait", 3*time.Second, "longest wait for a hashing slot before ResourceExhausted")
	fs.IntVar(&c.MaxUserFailures, "login-max-user-failures", 10, "failed logins of one username per window before it is throttled")
	fs.IntVar(&c.MaxAddrFailures, "login-max-addr-failures", 100, "failed logins from one client address per window before it is throttled")
	fs.DurationVar(&c.FailureWindow, "login-failure-window", 15*time.Minute, "window over which failed logins count, and the cool-down")
}

// ConfigFromArgs parses the command line (and AUTH_* environment variables) into a Config.
func ConfigFromArgs(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("auth", flag.ContinueOnError)
	c.RegisterFlags(fs)
	err := platform.ParseFlags(fs, args, "AUTH")
	return c, err
}
