package edgeserver

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrt/chat/services/edge/wsbuf"
)

// frame is one queued outbound message: a prepared (shared, encoded once per edge) event, or
// bytes of this connection's own (a reply).
type frame struct {
	prepared *websocket.PreparedMessage
	data     []byte
	size     int
}

// outbox is a connection's outbound queue, bounded in bytes.
type outbox struct {
	mu     sync.Mutex
	frames []frame
	bytes  int
	max    int
	closed bool
	wake   chan struct{}
}

func newOutbox(maxBytes int) *outbox {
	return &outbox{max: maxBytes, wake: make(chan struct{}, 1)}
}

// push queues f; it returns false when the queue would exceed its bound (or is closed).
func (o *outbox) push(f frame) bool {
	o.mu.Lock()
	if o.closed || o.bytes+f.size > o.max {
		o.mu.Unlock()
		return false
	}
	o.frames = append(o.frames, f)
	o.bytes += f.size
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

// take removes and returns everything queued.
func (o *outbox) take() []frame {
	o.mu.Lock()
	defer o.mu.Unlock()
	fs := o.frames
	o.frames, o.bytes = nil, 0
	return fs
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
}

func newSocket(ws *websocket.Conn, bc *wsbuf.Conn, cfg *Config) *socket {
	s := &socket{ws: ws, bc: bc, out: newOutbox(cfg.OutboundQueueBytes), cfg: cfg, done: make(chan struct{})}
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
func (s *socket) send(data []byte) {
	if !s.out.push(frame{data: data, size: len(data)}) {
		s.slowConsumer()
	}
}

// sendPrepared queues a shared frame of size bytes; a full queue closes the connection.
func (s *socket) sendPrepared(pm *websocket.PreparedMessage, size int) {
	if !s.out.push(frame{prepared: pm, size: size}) {
		s.slowConsumer()
	}
}

// slowConsumer closes a connection whose queue is full, without blocking the caller (the
// fan-out): the close may wait for the writer, which is stuck on this very peer.
func (s *socket) slowConsumer() {
	go s.closeWith(websocket.ClosePolicyViolation, "slow consumer")
}

// writeLoop sends queued frames, coalesced into one flush per wake-up (after letting them
// gather for WriteDelay), and pings, until the connection is finished.
func (s *socket) writeLoop() {
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	var gather *time.Timer
	if s.cfg.WriteDelay > 0 {
		gather = time.NewTimer(time.Hour)
		gather.Stop()
		defer gather.Stop()
	}
	for {
		select {
		case <-s.done:
			return
		case <-s.out.wake:
			if gather != nil {
				gather.Reset(s.cfg.WriteDelay)
				select {
				case <-s.done:
					return
				case <-gather.C:
				}
			}
			_ = s.ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			for _, f := range s.out.take() {
				var err error
				if f.prepared != nil {
					err = s.ws.WritePreparedMessage(f.prepared)
				} else {
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
		case <-ping.C:
			_ = s.ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if err := s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
				s.abort()
				return
			}
			if err := s.bc.Flush(); err != nil {
				s.abort()
				return
			}
		}
	}
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
		s.out.close()
		_ = s.bc.Flush() // a close frame gorilla wrote while reading (1009, an echoed close)
		_ = s.ws.Close()
	})
}
