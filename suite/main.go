// Command suite runs the whole chat suite in one process, for trying it out and for development:
// every service on its usual port, sharing one Redis. Without -redis it starts an embedded,
// in-memory Redis-protocol server (nothing is durable). In production, run each service's own
// binary instead.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := configFromArgs(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		slog.Error("suite: bad configuration", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		slog.Error("suite stopped", "err", err)
		os.Exit(1)
	}
}
