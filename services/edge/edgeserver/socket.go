package edgeserver

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrt/chat/services/edge/wsbuf"
)

// frame is one queued outbound message: a prepared (shared, encoded once per edge) event, bytes
// of this connection's own (a reply), or a ping.
type frame struct {
	prepared *websocket.PreparedMessage
	data     []byte
	// parts, when set, is the message in pieces (some shared, as a room's member list), sent
	// as one message; data is then unused.
	parts [][]byte
	size  int
	ping  bool
}

// outbox is a connection's outbound queue, bounded in bytes. A writer goroutine runs while
// frames are queued and lingers up to a tick of the linger clock after (see lingering), so an
// idle connection has none; the queue's slices come from a pool and go back when the writer
// ends.
type outbox struct {
	mu     sync.Mutex
	frames *[]frame // nil while nothing is queued and no writer runs
	bytes  int
	max    int
	closed bool
	// writer is the writer goroutine's state.
	writer lingering
}

// framesPool holds emptied frame slices (frames are queued for every delivery: without it
// they were most of the edge's garbage).
var framesPool = sync.Pool{New: func() any { fs := make([]frame, 0, 16); return &fs }}

// maxPooledFrames bounds the capacity of a slice kept in framesPool.
const maxPooledFrames = 256

func putFrames(fs *[]frame) {
	if fs == nil || cap(*fs) > maxPooledFrames {
		return
	}
	clear(*fs) // no shared event is kept alive by the pool
	*fs = (*fs)[:0]
	framesPool.Put(fs)
}

// push queues f. It reports false when the queue would exceed its bound (or is closed), and
// start when the caller must start a writer (none is running).
func (o *outbox) push(f frame) (ok, start bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.bytes+f.size > o.max {
		return false, false
	}
	if o.frames == nil {
		o.frames = framesPool.Get().(*[]frame)
	}
	*o.frames = append(*o.frames, f)
	o.bytes += f.size
	return true, o.writer.notify()
}

// take removes and returns everything queued, and queues what follows into spare (the slice
// the writer has just written, emptied; nil for a new one). When nothing is queued it returns
// nil and the writer is parked: a push wakes it (wake), or retire ends it.
func (o *outbox) take(spare *[]frame) *[]frame {
	o.mu.Lock()
	defer o.mu.Unlock()
	fs := o.frames
	if fs == nil || len(*fs) == 0 {
		o.frames = nil
		putFrames(fs)
		o.writer.park()
		return nil
	}
	o.frames, o.bytes = spare, 0
	return fs
}

// retire ends a parked writer; false if frames came meanwhile (the writer goes on).
func (o *outbox) retire() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writer.retire()
}

func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.frames, o.bytes = nil, 0
	o.mu.Unlock()
}

// socket is the transport side of one WebSocket connection: its outbound queue and writer,
// pings, and closing with a code. The protocol side (v1 or legacy) reads from ws.
type socket struct {
	ws      *websocket.Conn
	bc      *wsbuf.Conn
	out     *outbox
	cfg     *Config
	done    chan struct{} // closed when the connection is finished
	onceEnd sync.Once
	onceCls sync.Once
	// closing is set once the edge has sent its close frame.
	closing atomic.Bool
	// pinger queues a ping every PingInterval.
	pinger *time.Timer
	// writeDeadline is the deadline of frame writes (used by the writer only).
	writeDeadline time.Time
	clock         *lingerClock
}

func newSocket(ws *websocket.Conn, bc *wsbuf.Conn, cfg *Config, clock *lingerClock) *socket {
	s := &socket{ws: ws, bc: bc, out: &outbox{max: cfg.OutboundQueueBytes}, cfg: cfg, done: make(chan struct{}), clock: clock}
	ws.SetReadLimit(cfg.MaxFrameBytes)
	_ = ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	ws.SetPongHandler(func(string) error {
		if s.closing.Load() {
			return nil
		}
		return ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	})
	ws.SetPingHandler(func(data string) error {
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if err == nil {
			err = bc.Flush()
		}
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	return s
}

// send queues bytes of this connection's own; a full queue closes the connection.
func (s *socket) send(data []byte) { s.enqueue(frame{data: data, size: len(data)}) }

// sendParts queues one text message made of parts, written one after the other (none is
// copied; none may change afterwards).
func (s *socket) sendParts(parts ...[]byte) {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	s.enqueue(frame{parts: parts, size: size})
}

// sendPrepared queues a shared frame of size bytes; a full queue closes the connection.
func (s *socket) sendPrepared(pm *websocket.PreparedMessage, size int) {
	s.enqueue(frame{prepared: pm, size: size})
}

func (s *socket) enqueue(f frame) {
	ok, start := s.out.push(f)
	if !ok {
		s.slowConsumer()
		return
	}
	if start {
		go s.write()
	}
}

// startPings queues a ping every PingInterval until the connection is finished.
func (s *socket) startPings() {
	// Armed only once s.pinger is set, which the callback uses.
	s.pinger = time.AfterFunc(time.Hour, func() {
		select {
		case <-s.done:
			return
		default:
		}
		s.enqueue(frame{ping: true})
		s.pinger.Reset(s.cfg.PingInterval)
	})
	s.pinger.Reset(s.cfg.PingInterval)
}

// slowConsumer closes a connection whose queue is full, without blocking the caller (the
// fan-out): the close may wait for the writer, which is stuck on this very peer.
func (s *socket) slowConsumer() {
	go s.closeWith(websocket.ClosePolicyViolation, "slow consumer")
}

// write sends queued frames, each batch coalesced into one flush (after letting frames gather
// for WriteDelay), and lingers when the queue is empty; once it ends, the next frame starts a
// new writer.
func (s *socket) write() {
	var spare *[]frame
	for {
		if s.cfg.WriteDelay > 0 {
			select {
			case <-s.done:
			case <-time.After(s.cfg.WriteDelay):
			}
		}
		frames := s.out.take(spare)
		if frames == nil {
			if s.linger() {
				continue
			}
			putFrames(spare)
			return
		}
		s.renewWriteDeadline()
		for _, f := range *frames {
			var err error
			switch {
			case f.ping:
				err = s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout))
			case f.prepared != nil:
				err = s.ws.WritePreparedMessage(f.prepared)
			case f.parts != nil:
				err = writeParts(s.ws, f.parts)
			default:
				err = s.ws.WriteMessage(websocket.TextMessage, f.data)
			}
			if err != nil {
				s.abort()
				return
			}
		}
		if err := s.bc.Flush(); err != nil {
			s.abort()
			return
		}
		clear(*frames) // no shared event is kept alive by the spare
		*frames = (*frames)[:0]
		spare = frames
	}
}

// linger waits, parked, for frames until the clock's next tick or the connection's end; it
// reports whether the writer goes on.
func (s *socket) linger() bool {
	return s.out.writer.wait(s.clock, s.done) || !s.out.retire()
}

// renewWriteDeadline gives the writes that follow WriteTimeout again once half of it is
// used: a write still fails after blocking between half and all of WriteTimeout, and a busy
// connection does not re-arm its deadline for every burst.
func (s *socket) renewWriteDeadline() {
	now := time.Now()
	if s.writeDeadline.Sub(now) >= s.cfg.WriteTimeout/2 {
		return
	}
	s.writeDeadline = now.Add(s.cfg.WriteTimeout)
	_ = s.ws.SetWriteDeadline(s.writeDeadline)
}

// writeParts writes one text message from its parts.
func writeParts(ws *websocket.Conn, parts [][]byte) error {
	w, err := ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return w.Close()
}

// closeWith sends a close frame with code and reason, and gives the peer a second to answer
// before the connection is cut (the read loop ends on the answer or the deadline).
func (s *socket) closeWith(code int, reason string) {
	s.onceCls.Do(func() {
		s.closing.Store(true)
		s.out.close()
		err := s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		if err == nil {
			err = s.bc.Flush()
		}
		if err != nil {
			s.abort()
			return
		}
		_ = s.ws.SetReadDeadline(time.Now().Add(time.Second))
	})
}

// abort cuts the connection at once.
func (s *socket) abort() { _ = s.ws.NetConn().Close() }

// finish ends the writer and releases the connection; the read loop calls it on its way out.
func (s *socket) finish() {
	s.onceEnd.Do(func() {
		close(s.done)
		if s.pinger != nil {
			s.pinger.Stop()
		}
		s.out.close()
		_ = s.bc.Flush() // a close frame gorilla wrote while reading (1009, an echoed close)
		_ = s.ws.Close()
	})
}
