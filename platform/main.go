package platform

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// LogSettings returns the configured log level and format.
func (c Config) LogSettings() (level, format string) { return c.LogLevel, c.LogFormat }

// Main is the body of a service's main function: it parses the command line with parse (exit 0
// after -h, 2 on a bad configuration), builds the logger, and runs run until SIGINT or SIGTERM
// (exit 1 if it fails).
func Main[C interface{ LogSettings() (string, string) }](name string, parse func(args []string) (C, error), run func(context.Context, C, *slog.Logger) error) {
	cfg, err := parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		slog.Error(name+": bad configuration", "err", err)
		os.Exit(2)
	}
	level, format := cfg.LogSettings()
	log, err := NewLogger(os.Stderr, level, format)
	if err != nil {
		slog.Error(name+": bad configuration", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error(name+" stopped", "err", err)
		stop()
		os.Exit(1)
	}
}

// AddrOf is l's address, or "" for a nil listener.
func AddrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}
