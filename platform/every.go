package platform

import (
	"context"
	"time"
)

// Every calls fn every period until ctx is done (the first call one period from now). fn runs
// on the caller's goroutine, so a slow call delays the next rather than overlapping it.
func Every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
