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
)

// bufSize is the size of a pooled write buffer.
const bufSize = 32 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}

// Conn buffers what gorilla/websocket writes to the TCP connection until Flush. gorilla
// serializes its own writes; the mutex also orders them with Flush.
type Conn struct {
	net.Conn
	mu  sync.Mutex
	buf *[]byte
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
			return c.Conn.Write(p)
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
		_, err = c.Conn.Write(*c.buf)
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
