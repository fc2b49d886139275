package edgeserver

import (
	"sync"
	"sync/atomic"
	"time"
)

// workers runs functions on goroutines that it keeps between functions, up to max of them, so
// that their stacks, grown by a command's deep calls (JSON decoding, gRPC), are not grown again
// for every command (a fresh goroutine starts small: 6% of the edge's CPU went to growing
// command stacks). A function never waits for a kept goroutine: when all are busy it gets a new
// one. A kept goroutine ends after idle without work, or at stop.
//
// (github.com/panjf2000/ants does this too, but starts a package-level pool with background
// goroutines on import.)
type workers struct {
	max  int32
	idle time.Duration

	tasks chan func()
	done  chan struct{}
	count atomic.Int32
	wg    sync.WaitGroup
	once  sync.Once
}

func newWorkers(max int32, idle time.Duration) *workers {
	return &workers{max: max, idle: idle, tasks: make(chan func()), done: make(chan struct{})}
}

// run runs f on a kept goroutine that is free, else on a new one.
func (w *workers) run(f func()) {
	select {
	case w.tasks <- f:
		return
	default:
	}
	if w.count.Add(1) > w.max {
		w.count.Add(-1)
		go f()
		return
	}
	w.wg.Add(1)
	go w.loop(f)
}

// loop runs f, then whatever run hands it, until it has been idle for w.idle or stop is called.
func (w *workers) loop(f func()) {
	defer w.wg.Done()
	defer w.count.Add(-1)
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		f()
		t.Reset(w.idle)
		select {
		case f = <-w.tasks:
		case <-t.C:
			return
		case <-w.done:
			return
		}
	}
}

// stop ends the kept goroutines once their functions return, and waits for them.
func (w *workers) stop() {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
}
