// Command auth runs the auth service. Run it with -h for its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/services/auth/authserver"
)

func main() {
	cfg, err := authserver.ConfigFromArgs(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		slog.Error("auth: bad configuration", "err", err)
		os.Exit(2)
	}
	log, err := platform.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		slog.Error("auth: bad configuration", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := authserver.Run(ctx, cfg, log); err != nil {
		log.Error("auth service stopped", "err", err)
		os.Exit(1)
	}
}
