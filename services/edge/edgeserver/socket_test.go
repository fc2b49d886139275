package edgeserver

import (
	"context"
	"testing"
	"time"
)

// The outbox's writer states: started by the first frame, parked when drained, woken by the
// next frame, ended by retire only while nothing is queued.
func TestOutboxWriterLifecycle(t *testing.T) {
	o := &outbox{max: 1 << 20}
	f := frame{data: []byte("x"), size: 1}

	if ok, start := o.push(f); !ok || !start {
		t.Fatalf("first push: ok %v start %v, want a writer started", ok, start)
	}
	if ok, start := o.push(f); !ok || start {
		t.Fatalf("push while writing: ok %v start %v, want queued for the running writer", ok, start)
	}
	fs := o.take(nil)
	if fs == nil || len(*fs) != 2 {
		t.Fatalf("take: %v, want the two frames", fs)
	}
	clear(*fs)
	*fs = (*fs)[:0]
	if got := o.take(fs); got != nil {
		t.Fatalf("take of an empty queue: %v, want nil (parked)", got)
	}

	// A frame for a parked writer wakes it, and it is then not retired.
	if ok, start := o.push(f); !ok || start {
		t.Fatalf("push to a parked writer: ok %v start %v, want it woken, not a new one", ok, start)
	}
	select {
	case <-o.writer.wake:
	default:
		t.Fatal("parked writer not woken")
	}
	if o.retire() {
		t.Fatal("retired a writer with a frame queued")
	}
	if fs := o.take(nil); fs == nil || len(*fs) != 1 {
		t.Fatalf("take after waking: %v, want one frame", fs)
	}

	// Drained and retired: the next frame needs a new writer.
	if got := o.take(nil); got != nil {
		t.Fatalf("take of an empty queue: %v, want nil", got)
	}
	if !o.retire() {
		t.Fatal("an idle parked writer was not retired")
	}
	if ok, start := o.push(f); !ok || !start {
		t.Fatalf("push after retiring: ok %v start %v, want a new writer", ok, start)
	}
}

func TestOutboxBoundAndClose(t *testing.T) {
	o := &outbox{max: 10}
	if ok, _ := o.push(frame{data: make([]byte, 8), size: 8}); !ok {
		t.Fatal("push within the bound refused")
	}
	if ok, _ := o.push(frame{data: make([]byte, 8), size: 8}); ok {
		t.Fatal("push beyond the bound accepted")
	}
	o.close()
	if ok, _ := o.push(frame{data: []byte("x"), size: 1}); ok {
		t.Fatal("push to a closed outbox accepted")
	}
}

func TestLingerClockTicks(t *testing.T) {
	l := newLingerClock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, time.Millisecond)
	}()
	for range 3 {
		select {
		case <-l.next():
		case <-time.After(5 * time.Second):
			t.Fatal("no tick")
		}
	}
	cancel()
	<-done
}
