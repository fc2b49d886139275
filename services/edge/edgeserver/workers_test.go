package edgeserver

import (
	"sync"
	"testing"
	"time"
)

// TestWorkersKeepGoroutines: functions reuse kept goroutines, never wait for one (beyond max
// they get new goroutines), and kept goroutines end when idle and at stop.
func TestWorkersKeepGoroutines(t *testing.T) {
	w := newWorkers(2, 200*time.Millisecond)
	defer w.stop()
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 5 { // 2 kept, 3 more on goroutines of their own: none waits
		wg.Add(1)
		w.run(func() {
			defer wg.Done()
			<-release
		})
	}
	if n := w.count.Load(); n != 2 {
		t.Fatalf("%d kept goroutines, want 2", n)
	}
	close(release)
	wg.Wait()
	// A kept goroutine, now free, takes the next function.
	waitUntil(t, func() bool {
		ran := make(chan struct{})
		w.run(func() { close(ran) })
		<-ran
		return w.count.Load() == 2
	})
	// Idle for longer than 200 ms, they end.
	waitUntil(t, func() bool { return w.count.Load() == 0 })
	w.run(func() {})
	w.stop()
	if n := w.count.Load(); n != 0 {
		t.Fatalf("%d kept goroutines after stop", n)
	}
}
