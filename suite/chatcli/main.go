// Command chatcli is a small terminal client of protocol v1: it logs in (registering the user
// the first time), joins a room, prints the room's events, and sends each line you type.
// Lines starting with "/" are commands: /who, /history, /quit.
//
//	go run ./suite/chatcli -user alice -password wonderland -room lobby
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/ws", "the edge's WebSocket endpoint")
	user := flag.String("user", "", "username (registered on first use)")
	password := flag.String("password", "", "password (8 bytes or more)")
	room := flag.String("room", "lobby", "room to join")
	flag.Parse()
	if *user == "" || *password == "" {
		fmt.Fprintln(os.Stderr, "chatcli: -user and -password are required")
		os.Exit(2)
	}
	if err := run(*url, *user, *password, *room, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chatcli:", err)
		os.Exit(1)
	}
}

// session is a connection with replies matched to commands.
type session struct {
	conn    *websocket.Conn
	out     io.Writer
	mu      sync.Mutex
	nextID  int64
	waiting map[int64]chan map[string]any
}

func run(url, user, password, room string, in io.Reader, out io.Writer) error {
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", url, err)
	}
	defer conn.Close()
	s := &session{conn: conn, out: out, waiting: map[int64]chan map[string]any{}}
	ended := make(chan error, 1)
	go func() { ended <- s.read() }()

	if _, err := s.call("login", map[string]any{"username": user, "password": password}); err != nil {
		if _, rerr := s.call("register", map[string]any{"username": user, "password": password}); rerr != nil {
			return fmt.Errorf("log in: %v; register: %v", err, rerr)
		}
		fmt.Fprintf(out, "registered %s\n", user)
	}
	join, err := s.call("join", map[string]any{"room": room})
	if err != nil {
		return fmt.Errorf("join %q: %w", room, err)
	}
	fmt.Fprintf(out, "joined %s: %v members; type to chat, /who, /history, /quit\n", room, join["member_count"])

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case err := <-ended:
			return err
		case line, ok := <-lines:
			if !ok || line == "/quit" {
				_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				return nil
			}
			s.command(room, line)
		}
	}
}

func (s *session) command(room, line string) {
	switch strings.TrimSpace(line) {
	case "":
	case "/who":
		if d, err := s.call("who", map[string]any{"room": room}); err != nil {
			fmt.Fprintln(s.out, "!", err)
		} else {
			var names []string
			for _, m := range d["members"].([]any) {
				m := m.(map[string]any)
				names = append(names, fmt.Sprintf("%v (%v)", m["username"], m["connections"]))
			}
			fmt.Fprintf(s.out, "* %v in %s: %s\n", d["member_count"], room, strings.Join(names, ", "))
		}
	case "/history":
		if d, err := s.call("history", map[string]any{"room": room, "limit": 20}); err != nil {
			fmt.Fprintln(s.out, "!", err)
		} else {
			for _, m := range d["messages"].([]any) {
				s.print(m.(map[string]any))
			}
		}
	default:
		if _, err := s.call("send", map[string]any{"room": room, "text": line}); err != nil {
			fmt.Fprintln(s.out, "!", err)
		}
	}
}

// call sends a command and waits for its reply; an error reply becomes an error.
func (s *session) call(typ string, fields map[string]any) (map[string]any, error) {
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	ch := make(chan map[string]any, 1)
	s.waiting[id] = ch
	s.mu.Unlock()
	fields["id"], fields["type"] = id, typ
	if err := s.conn.WriteJSON(fields); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r["ok"] != true {
			e, _ := r["error"].(map[string]any)
			return nil, fmt.Errorf("%v: %v", e["code"], e["message"])
		}
		d, _ := r["data"].(map[string]any)
		return d, nil
	case <-time.After(15 * time.Second):
		return nil, errors.New("no reply within 15s")
	}
}

// read prints events and hands replies to their callers until the connection ends.
func (s *session) read() error {
	for {
		var m map[string]any
		if err := s.conn.ReadJSON(&m); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Errorf("closed by the server: %d %s", ce.Code, ce.Text)
			}
			return err
		}
		if id, ok := m["id"].(float64); ok {
			s.mu.Lock()
			ch := s.waiting[int64(id)]
			delete(s.waiting, int64(id))
			s.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		s.print(m)
	}
}

func (s *session) print(ev map[string]any) {
	ts, _ := ev["ts"].(float64)
	at := time.UnixMilli(int64(ts)).Format("15:04:05")
	switch ev["type"] {
	case "message":
		fmt.Fprintf(s.out, "[%s] #%v %v: %v\n", at, ev["seq"], ev["username"], ev["text"])
	case "joined", "left":
		fmt.Fprintf(s.out, "[%s] * %v %v\n", at, ev["username"], ev["type"])
	}
}
