// Package wsbuf lets a WebSocket server put many frames into one write: the connection that
// gorilla/websocket hijacks is wrapped in a buffer that the server flushes when its queue is
// drained, instead of one syscall per frame. The buffer is borrowed from a pool only between a
// write and the next flush, so an idle connection holds none.
package wsbuf

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// bufSize is the size of a pooled write buffer.
const bufSize = 32 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}

// Conn buffers what gorilla/websocket writes to the TCP connection until Flush. gorilla
// serializes its own writes; the mutex also orders them with Flush.
//
// gorilla sets the write deadline before every frame it writes; Conn keeps it and passes it to
// the TCP connection only when bytes actually go out and only if it changed (setting a
// deadline re-arms a runtime timer: for many frames per write that was the largest cost).
type Conn struct {
	net.Conn
	mu  sync.Mutex
	buf *[]byte
	// deadline is the write deadline last set; applied is the one the TCP connection has.
	deadline, applied time.Time
}

// SetWriteDeadline sets the deadline of the writes that follow (applied when they reach the
// TCP connection).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

// SetDeadline sets both deadlines, the write one as SetWriteDeadline does.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// writeLocked writes p to the TCP connection under the current write deadline.
func (c *Conn) writeLocked(p []byte) (int, error) {
	if !c.deadline.Equal(c.applied) {
		if err := c.Conn.SetWriteDeadline(c.deadline); err != nil {
			return 0, err
		}
		c.applied = c.deadline
	}
	return c.Conn.Write(p)
}

func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		c.buf = pool.Get().(*[]byte)
	}
	if len(*c.buf)+len(p) > cap(*c.buf) {
		if err := c.flushLocked(false); err != nil {
			return 0, err
		}
		if len(p) > cap(*c.buf) {
			return c.writeLocked(p)
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// Flush sends what is buffered and returns the buffer to the pool.
func (c *Conn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked(true)
}

func (c *Conn) flushLocked(release bool) error {
	if c.buf == nil {
		return nil
	}
	var err error
	if len(*c.buf) > 0 {
		_, err = c.writeLocked(*c.buf)
		*c.buf = (*c.buf)[:0]
	}
	if release {
		pool.Put(c.buf)
		c.buf = nil
	}
	return err
}

// Hijacker is an http.ResponseWriter that hands gorilla/websocket a *Conn when it hijacks the
// connection. After Upgrade, Conn is set; flush it once to send the handshake answer.
type Hijacker struct {
	http.ResponseWriter
	Conn *Conn
}

// Hijack implements http.Hijacker.
func (h *Hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.Conn = &Conn{Conn: c}
	return h.Conn, brw, nil
}
