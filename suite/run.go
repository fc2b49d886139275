package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/services/auth/authserver"
	"github.com/chatrt/chat/services/edge/edgeserver"
	"github.com/chatrt/chat/services/presence/presenceserver"
	"github.com/chatrt/chat/services/room/roomserver"
)

// config is the suite's own configuration. Each service reads the rest of its settings from its
// environment variables (AUTH_*, ROOM_*, PRESENCE_*, EDGE_*), as its own binary would; -redis
// overrides their Redis.
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

// services are the suite's services, configured.
type services struct {
	auth     authserver.Config
	room     roomserver.Config
	presence presenceserver.Config
	edge     edgeserver.Config
}

// configure reads each service's configuration from its environment and points it at
// redisAddr. The room service reads the event stream of this presence service.
func configure(redisAddr string) (services, error) {
	var s services
	var err error
	if s.auth, err = authserver.ConfigFromArgs(nil); err != nil {
		return s, fmt.Errorf("auth config: %w", err)
	}
	if s.room, err = roomserver.ConfigFromArgs(nil); err != nil {
		return s, fmt.Errorf("room config: %w", err)
	}
	if s.presence, err = presenceserver.ConfigFromArgs(nil); err != nil {
		return s, fmt.Errorf("presence config: %w", err)
	}
	if s.edge, err = edgeserver.ConfigFromArgs(nil); err != nil {
		return s, fmt.Errorf("edge config: %w", err)
	}
	s.auth.Redis.Addrs = redisAddr
	s.room.Redis.Addrs = redisAddr
	s.presence.Redis.Addrs = redisAddr
	s.edge.Redis.Addrs = redisAddr
	s.room.PresenceEvents = s.presence.Redis.KeyPrefix + "events"
	s.edge.RoomKeyPrefix = s.room.Redis.KeyPrefix
	s.edge.AuthAddr, s.edge.RoomAddr, s.edge.PresenceAddr = s.auth.GRPCAddr, s.room.GRPCAddr, s.presence.GRPCAddr
	return s, nil
}

// runAll runs every service until ctx is done or one fails. The edge stops first, so that its
// shutdown (closing sockets, leaving rooms, unbinding, releasing its lease) still reaches the
// services; they stop after it.
func (s services) runAll(ctx context.Context, log *slog.Logger) error {
	backCtx, stopBack := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBack()
	back, backCtx := errgroup.WithContext(backCtx)
	back.Go(func() error { return authserver.Run(backCtx, s.auth, log.With("service", "auth")) })
	back.Go(func() error { return roomserver.Run(backCtx, s.room, log.With("service", "room")) })
	back.Go(func() error { return presenceserver.Run(backCtx, s.presence, log.With("service", "presence")) })

	edgeCtx, stopEdge := context.WithCancel(ctx)
	defer stopEdge()
	edgeDone := make(chan error, 1)
	go func() { edgeDone <- edgeserver.Run(edgeCtx, s.edge, log.With("service", "edge")) }()

	var err error
	select {
	case err = <-edgeDone:
		stopBack()
	case <-backCtx.Done():
		// A service failed (or ctx ended): stop the edge, then collect the services' error.
		stopEdge()
		<-edgeDone
	}
	stopBack()
	if berr := back.Wait(); berr != nil && err == nil {
		err = berr
	}
	return err
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
	s, err := configure(redisAddr)
	if err != nil {
		return err
	}
	legacy := ""
	if s.edge.Legacy {
		legacy = fmt.Sprintf("  legacy    ws://%s/ws/legacy (the seed tutorial's protocol)\n", s.edge.HTTPAddr)
	}
	fmt.Fprintf(os.Stderr, "\nchat suite running (Ctrl-C stops it)\n"+
		"  browsers  ws://%s/ws (protocol v1)\n%s"+
		"  auth      grpc %s   (grpcurl -plaintext %s list)\n  room      grpc %s\n  presence  grpc %s\n  redis     %s\n\n",
		s.edge.HTTPAddr, legacy, s.auth.GRPCAddr, s.auth.GRPCAddr, s.room.GRPCAddr, s.presence.GRPCAddr, redisAddr)
	return s.runAll(ctx, log)
}
