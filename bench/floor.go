package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrt/chat/services/edge/wsbuf"
)

// The floor: a minimal gorilla/websocket broadcast server, written as a fair best case for the
// same hardware. One room, no auth, no Redis, no gRPC. A `send` is given the next seq and
// broadcast as a protocol-v1 `message` event: encoded once (PreparedMessage), queued to every
// connection, each with one writer goroutine that coalesces its queue into one write. Every
// other command is answered ok, so the load generator drives it like the suite.

type floorConn struct {
	ws   *websocket.Conn
	bc   *wsbuf.Conn
	mu   sync.Mutex
	q    []*websocket.PreparedMessage
	wake chan struct{}
	done chan struct{}
}

type floor struct {
	mu    sync.Mutex
	conns map[*floorConn]struct{}
	seq   atomic.Uint64
}

func floorServe(args []string) error {
	fs := flag.NewFlagSet("floor-serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f := &floor{conns: map[*floorConn]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/ws", f.serve)
	return http.ListenAndServe(*addr, mux)
}

var floorUpgrader = websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}

func (f *floor) serve(w http.ResponseWriter, r *http.Request) {
	hj := &wsbuf.Hijacker{ResponseWriter: w}
	ws, err := floorUpgrader.Upgrade(hj, r, nil)
	if err != nil {
		return
	}
	_ = hj.Conn.Flush()
	c := &floorConn{ws: ws, bc: hj.Conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	f.mu.Lock()
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	go c.writeLoop()
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		close(c.done)
		ws.Close()
	}()
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var cmd struct {
			ID   int64  `json:"id"`
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if json.Unmarshal(data, &cmd) != nil {
			continue
		}
		data = []byte(`{"id":` + strconv.FormatInt(cmd.ID, 10) + `,"ok":true,"data":{}}`)
		if cmd.Type == "send" {
			seq := f.seq.Add(1)
			ev, _ := json.Marshal(map[string]any{
				"type": "message", "room": "floor", "seq": seq, "user_id": "u", "username": "u", "text": cmd.Text, "ts": time.Now().UnixMilli(),
			})
			pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, ev)
			f.broadcast(pm)
			data = []byte(`{"id":` + strconv.FormatInt(cmd.ID, 10) + `,"ok":true,"data":{"seq":` + strconv.FormatUint(seq, 10) + `}}`)
		}
		pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, data)
		c.push(pm)
	}
}

func (f *floor) broadcast(pm *websocket.PreparedMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.push(pm)
	}
}

func (c *floorConn) push(pm *websocket.PreparedMessage) {
	c.mu.Lock()
	c.q = append(c.q, pm)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *floorConn) writeLoop() {
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		q := c.q
		c.q = nil
		c.mu.Unlock()
		for _, pm := range q {
			if c.ws.WritePreparedMessage(pm) != nil {
				c.ws.Close()
				return
			}
		}
		if c.bc.Flush() != nil {
			c.ws.Close()
			return
		}
	}
}
