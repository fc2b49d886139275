package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/services/auth/authserver"
)

// config is the suite's own configuration. Each service reads the rest of its settings from its
// environment variables (AUTH_*, ...), as its own binary would; -redis overrides their Redis.
type config struct {
	// Redis is the address of the Redis to use; empty starts an embedded one. Default empty.
	Redis     string
	LogLevel  string
	LogFormat string
}

func configFromArgs(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("suite", flag.ContinueOnError)
	fs.StringVar(&c.Redis, "redis", "", "Redis address (host:port, or a comma-separated cluster list); empty: an embedded in-memory server, nothing durable")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	err := platform.ParseFlags(fs, args, "SUITE")
	return c, err
}

func run(ctx context.Context, c config) error {
	log, err := platform.NewLogger(os.Stderr, c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}
	redisAddr := c.Redis
	if redisAddr == "" {
		addr, stop, err := startEmbeddedRedis(ctx)
		if err != nil {
			return err
		}
		defer stop()
		redisAddr = addr
		log.Warn("no -redis given: using an embedded in-memory Redis; NOTHING IS DURABLE", "addr", addr)
	}

	authCfg, err := authserver.ConfigFromArgs(nil)
	if err != nil {
		return fmt.Errorf("auth config: %w", err)
	}
	authCfg.Redis.Addrs = redisAddr

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return authserver.Run(ctx, authCfg, log.With("service", "auth")) })

	fmt.Fprintf(os.Stderr, "\nchat suite running (Ctrl-C stops it)\n"+
		"  auth     grpc %s   try: grpcurl -plaintext %s list\n"+
		"  redis    %s\n\n", authCfg.GRPCAddr, authCfg.GRPCAddr, redisAddr)
	return g.Wait()
}
