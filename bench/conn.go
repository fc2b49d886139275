package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// benchConn is one load-generator connection.
type benchConn struct {
	ws     *websocket.Conn
	nextID int64
}

var dialer = websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 4096}

func dial(url string) (*benchConn, error) {
	ws, _, err := dialer.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	return &benchConn{ws: ws}, nil
}

// call sends a command and reads until its reply (other frames are dropped); for set-up only.
func (c *benchConn) call(typ string, fields map[string]any) (map[string]any, error) {
	c.nextID++
	msg := map[string]any{"id": c.nextID, "type": typ}
	for k, v := range fields {
		msg[k] = v
	}
	if err := c.ws.WriteJSON(msg); err != nil {
		return nil, err
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer c.ws.SetReadDeadline(time.Time{})
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return nil, err
		}
		if !bytes.Contains(data, []byte(`"id":`+strconv.FormatInt(c.nextID, 10)+`,`)) {
			continue
		}
		var r struct {
			OK    bool           `json:"ok"`
			Data  map[string]any `json:"data"`
			Error map[string]any `json:"error"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		if !r.OK {
			return nil, fmt.Errorf("%s: %v", typ, r.Error)
		}
		return r.Data, nil
	}
}

// enter logs in with token and joins room (the suite); the floor needs neither.
func (c *benchConn) enter(t *target, token, room string) error {
	if t.kind == "floor" {
		return nil
	}
	if _, err := c.call("login", map[string]any{"token": token}); err != nil {
		return err
	}
	_, err := c.call("join", map[string]any{"room": room})
	return err
}

// send writes a send command without waiting for its reply.
func (c *benchConn) send(room, text string) error {
	c.nextID++
	frame := `{"id":` + strconv.FormatInt(c.nextID, 10) + `,"type":"send","room":` + strconv.Quote(room) + `,"text":"` + text + `"}`
	return c.ws.WriteMessage(websocket.TextMessage, []byte(frame))
}

// registerUsers makes n users and returns a token for each (hashing is slow by design: this
// is set-up, not what is measured).
func registerUsers(t *target, n int, prefix string) ([]string, error) {
	if t.kind == "floor" {
		return make([]string, n), nil
	}
	tokens := make([]string, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 4)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			c, err := dial(t.url)
			if err != nil {
				errs <- err
				return
			}
			defer c.ws.Close()
			d, err := c.call("register", map[string]any{"username": fmt.Sprintf("%s%d", prefix, i), "password": "bench-password"})
			if err != nil {
				errs <- err
				return
			}
			tokens[i], _ = d["token"].(string)
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	return tokens, nil
}

// openConns opens n connections, logged in and joined, c at a time; it returns them and each
// one's set-up latency.
func openConns(t *target, n, c int, tokens []string, room string) ([]*benchConn, []time.Duration, error) {
	conns := make([]*benchConn, n)
	lat := make([]time.Duration, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, c)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			start := time.Now()
			bc, err := dial(t.urls[i%len(t.urls)])
			if err == nil {
				err = bc.enter(t, tokens[i%len(tokens)], room)
			}
			lat[i] = time.Since(start)
			conns[i] = bc
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return conns, lat, first
}

func closeAll(conns []*benchConn) {
	for _, c := range conns {
		if c != nil {
			c.ws.Close()
		}
	}
}
