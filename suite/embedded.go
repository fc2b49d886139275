package main

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// startEmbeddedRedis starts an in-memory Redis-protocol server on a free loopback port.
// miniredis does not expire keys on its own: a goroutine moves its clock along with the real
// one, so TTLs (tokens, leases, dedup windows) lapse as they would in Redis. stop ends both.
func startEmbeddedRedis(ctx context.Context) (addr string, stop func(), err error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return "", nil, fmt.Errorf("start embedded redis: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		const tick = 100 * time.Millisecond
		last := time.Now()
		m.SetTime(last)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				m.FastForward(now.Sub(last))
				m.SetTime(now)
				last = now
			}
		}
	}()
	return m.Addr(), func() {
		cancel()
		<-done
		m.Close()
	}, nil
}
