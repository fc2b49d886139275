package edgeserver

import (
	"context"
	"sync"
	"time"

	"github.com/chatrt/chat/platform"
)

// lingerPeriod is how often the lingerClock ticks: a lingering goroutine outlives its last
// work by at most that.
const lingerPeriod = 50 * time.Millisecond

// lingerClock ticks for parked goroutines: socket writers and command goroutines. A writer
// whose queue empties waits for more frames until the next tick instead of ending at once, so
// a connection that receives often keeps one writer instead of starting a goroutine (and
// growing its stack again) for every burst, while one that has gone quiet has no writer a tick
// later (and so no stack: idle connections stay small). One clock serves every connection, so
// waiting costs no timer each.
type lingerClock struct {
	mu   sync.Mutex
	tick chan struct{} // closed at the next tick
}

func newLingerClock() *lingerClock { return &lingerClock{tick: make(chan struct{})} }

// next is closed at the next tick.
func (l *lingerClock) next() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tick
}

// run ticks every period until ctx is done.
func (l *lingerClock) run(ctx context.Context, period time.Duration) {
	platform.Every(ctx, period, func() {
		l.mu.Lock()
		close(l.tick)
		l.tick = make(chan struct{})
		l.mu.Unlock()
	})
}

// lingering is the state of a goroutine that runs while there is work and then lingers until
// the linger clock's next tick (a socket's writer, a connection's command goroutine). The
// owner's mutex guards it; wait is called without it.
type lingering struct {
	alive  bool // the goroutine exists
	parked bool // it waits on wake for work
	wake   chan struct{}
}

// notify is called once work is added: it reports whether a goroutine must be started, and
// wakes a parked one.
func (l *lingering) notify() (start bool) {
	if !l.alive {
		l.alive = true
		return true
	}
	if l.parked {
		l.parked = false
		select {
		case l.wake <- struct{}{}:
		default: // already woken
		}
	}
	return false
}

// park is called by the goroutine when it finds no work.
func (l *lingering) park() {
	l.parked = true
	if l.wake == nil {
		l.wake = make(chan struct{}, 1)
	}
}

// wait blocks the parked goroutine until it is woken (true: look for work again), or until
// the clock ticks or done is closed (false: retire decides).
func (l *lingering) wait(clock *lingerClock, done <-chan struct{}) bool {
	select {
	case <-l.wake:
		return true
	case <-clock.next():
	case <-done:
	}
	return false
}

// retire reports whether the parked goroutine ends: not if work came since it parked. (A
// wake-up sent meanwhile stays in wake, and only makes the goroutine look for work once more.)
func (l *lingering) retire() bool {
	if !l.parked {
		return false
	}
	l.parked, l.alive = false, false
	return true
}
