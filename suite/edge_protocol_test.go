package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestProtocolCommands runs every command of protocol v1 and its error replies.
func TestProtocolCommands(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-p", nil)

	anon := connectWS(t, e)
	if got := anon.ok("ping", nil); got["ts"] == nil {
		t.Fatalf("ping answered %v", got)
	}
	for _, typ := range []string{"join", "send", "leave", "history", "who", "logout"} {
		if code := anon.fails(typ, map[string]any{"room": "lobby", "text": "x"}); code != "unauthenticated" {
			t.Fatalf("%s before login: %s", typ, code)
		}
	}

	alice := connectWS(t, e)
	reg := alice.ok("register", map[string]any{"username": "alice", "password": "password-alice"})
	if reg["username"] != "alice" || reg["user_id"] == "" || reg["token"] == "" {
		t.Fatalf("register answered %v", reg)
	}
	if code := alice.fails("login", map[string]any{"username": "alice", "password": "password-alice"}); code != "conflict" {
		t.Fatalf("second login: %s", code)
	}
	if code := anon.fails("register", map[string]any{"username": "ALICE", "password": "password-x1"}); code != "conflict" {
		t.Fatalf("taken username: %s", code)
	}
	if code := anon.fails("register", map[string]any{"username": "a", "password": "password-x1"}); code != "bad_request" {
		t.Fatalf("short username: %s", code)
	}
	if code := anon.fails("login", map[string]any{"username": "alice", "password": "wrong-password"}); code != "unauthenticated" {
		t.Fatalf("wrong password: %s", code)
	}
	if code := anon.fails("login", map[string]any{"token": "not-a-token"}); code != "unauthenticated" {
		t.Fatalf("bad token: %s", code)
	}
	if code := anon.fails("login", map[string]any{"token": strings.Repeat("t", 40000)}); code != "bad_request" {
		t.Fatalf("oversized token: %s", code)
	}
	if code := anon.fails("login", map[string]any{}); code != "bad_request" {
		t.Fatalf("login without credentials: %s", code)
	}

	// Token login on another socket.
	bob := connectWS(t, e)
	bob.ok("register", map[string]any{"username": "bob", "password": "password-bob"})
	bob2 := connectWS(t, e)
	viaToken := bob2.ok("login", map[string]any{"token": reg["token"]})
	if viaToken["user_id"] != reg["user_id"] || viaToken["username"] != "alice" {
		t.Fatalf("token login answered %v", viaToken)
	}

	join := alice.ok("join", map[string]any{"room": "lobby"})
	if join["room"] != "lobby" || join["last_seq"] != float64(0) || join["member_count"] != float64(1) {
		t.Fatalf("join answered %v", join)
	}
	if _, has := join["recovered"]; has {
		t.Fatalf("join without since answered recovered: %v", join)
	}
	if ev := alice.nextOf("joined"); ev["username"] != "alice" || ev["room"] != "lobby" {
		t.Fatalf("joined event %v", ev)
	}
	join = bob.ok("join", map[string]any{"room": "lobby"})
	if join["member_count"] != float64(2) || len(join["members"].([]any)) != 2 {
		t.Fatalf("bob's join %v", join)
	}
	if ev := alice.nextOf("joined"); ev["username"] != "bob" {
		t.Fatalf("alice saw %v", ev)
	}

	// send: the sender gets its own message too; ids in payloads are ignored.
	sent := alice.ok("send", map[string]any{"room": "lobby", "text": "<img src=x onerror=alert(1)>", "user_id": reg["user_id"].(string) + "x", "username": "mallory"})
	if sent["seq"] != float64(1) || sent["ts"] == nil {
		t.Fatalf("send answered %v", sent)
	}
	for _, c := range []*wsClient{alice, bob} {
		ev := c.nextOf("message")
		if ev["seq"] != float64(1) || ev["user_id"] != reg["user_id"] || ev["username"] != "alice" ||
			ev["text"] != "<img src=x onerror=alert(1)>" || ev["ts"] != sent["ts"] || ev["room"] != "lobby" {
			t.Fatalf("message event %v", ev)
		}
	}
	dup := alice.ok("send", map[string]any{"room": "lobby", "text": "once", "client_msg_id": "m1"})
	again := alice.ok("send", map[string]any{"room": "lobby", "text": "once", "client_msg_id": "m1"})
	if dup["seq"] != float64(2) || again["seq"] != float64(2) || again["ts"] != dup["ts"] {
		t.Fatalf("client_msg_id repeat: %v then %v", dup, again)
	}
	bob.nextOf("message")
	bob.quiet(200 * time.Millisecond) // the repeat was not broadcast

	if code := alice.fails("send", map[string]any{"room": "elsewhere", "text": "x"}); code != "forbidden" {
		t.Fatalf("send to a room not joined: %s", code)
	}
	if code := alice.fails("send", map[string]any{"room": "lobby", "text": ""}); code != "bad_request" {
		t.Fatalf("empty text: %s", code)
	}
	if code := alice.fails("send", map[string]any{"room": "lobby", "text": strings.Repeat("x", 4001)}); code != "too_large" {
		t.Fatalf("long text: %s", code)
	}
	if code := alice.fails("history", map[string]any{"room": "elsewhere"}); code != "forbidden" {
		t.Fatalf("history of a room not joined: %s", code)
	}
	if code := alice.fails("who", map[string]any{"room": "elsewhere"}); code != "forbidden" {
		t.Fatalf("who of a room not joined: %s", code)
	}
	if code := alice.fails("join", map[string]any{"room": ""}); code != "bad_request" {
		t.Fatalf("join without a room: %s", code)
	}
	if code := alice.fails("history", map[string]any{"room": "lobby", "limit": 201}); code != "bad_request" {
		t.Fatalf("history limit 201: %s", code)
	}

	hist := alice.ok("history", map[string]any{"room": "lobby"})
	msgs := hist["messages"].([]any)
	if len(msgs) != 2 || msgs[0].(map[string]any)["seq"] != float64(1) || msgs[1].(map[string]any)["text"] != "once" {
		t.Fatalf("history %v", hist)
	}
	hist = alice.ok("history", map[string]any{"room": "lobby", "before_seq": 2, "limit": 1})
	if msgs := hist["messages"].([]any); len(msgs) != 1 || msgs[0].(map[string]any)["seq"] != float64(1) {
		t.Fatalf("history page %v", hist)
	}

	bob2.ok("join", map[string]any{"room": "lobby"}) // alice's second connection
	who := bob.ok("who", map[string]any{"room": "lobby"})
	if who["member_count"] != float64(2) {
		t.Fatalf("who %v", who)
	}
	for _, m := range who["members"].([]any) {
		m := m.(map[string]any)
		if want := map[string]float64{"alice": 2, "bob": 1}[m["username"].(string)]; m["connections"] != want {
			t.Fatalf("who member %v, want %v connections", m, want)
		}
	}

	bob.ok("leave", map[string]any{"room": "lobby"})
	if ev := alice.nextOf("left"); ev["username"] != "bob" {
		t.Fatalf("left event %v", ev)
	}
	if code := bob.fails("send", map[string]any{"room": "lobby", "text": "x"}); code != "forbidden" {
		t.Fatalf("send after leave: %s", code)
	}

	// logout revokes the token: the socket is unauthenticated, the token no longer works.
	bob2.ok("logout", nil)
	if code := bob2.fails("send", map[string]any{"room": "lobby", "text": "x"}); code != "unauthenticated" {
		t.Fatalf("send after logout: %s", code)
	}
	if code := anon.fails("login", map[string]any{"token": reg["token"]}); code != "unauthenticated" {
		t.Fatalf("revoked token: %s", code)
	}
	// alice's first connection is still in the room: no `left` for her.
	alice.quiet(200 * time.Millisecond)
	bob2.ok("login", map[string]any{"username": "bob", "password": "password-bob"})
}

// TestBadFramesKeepTheConnection: malformed frames get bad_request and the socket stays usable.
func TestBadFramesKeepTheConnection(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-b", nil)
	c := connectWS(t, e)
	for _, tc := range []struct {
		frame string
		id    float64
	}{
		{`not json`, 0},
		{`[1,2,3]`, 0},
		{`"just a string"`, 0},
		{`{"type":"ping"}`, 0},
		{`{"id":"7","type":"ping"}`, 0},
		{`{"id":1.5,"type":"ping"}`, 0},
		{`{"id":7}`, 7},
		{`{"id":9,"type":"login","username":42,"password":"x"}`, 9},
		{`{"id":10,"type":"register","username":["a"],"password":"password1"}`, 10},
	} {
		if err := c.conn.WriteMessage(1, []byte(tc.frame)); err != nil {
			t.Fatal(err)
		}
		r := c.next()
		e, _ := r["error"].(map[string]any)
		if r["id"] != tc.id || r["ok"] != false || e["code"] != "bad_request" || e["message"] == "" {
			t.Fatalf("frame %s answered %v", tc.frame, r)
		}
	}
	c.ok("ping", nil)
	// Before login, every other type is unauthenticated (protocol v1); after, unknown types are
	// bad requests.
	if code := c.fails("fly", nil); code != "unauthenticated" {
		t.Fatalf("unknown type before login: %s", code)
	}
	c.ok("register", map[string]any{"username": "carol", "password": "password-carol"})
	if code := c.fails("fly", nil); code != "bad_request" {
		t.Fatalf("unknown type: %s", code)
	}
	c.ok("ping", nil)
}

// TestJoinMemberListsStayCurrent: an edge keeps a room's member list between joins; every join
// still lists the members as they are, whatever joined or left, here or on another edge.
func TestJoinMemberListsStayCurrent(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e1, e2 := b.startEdge(t, "edge-m1", nil), b.startEdge(t, "edge-m2", nil)
	names := func(join map[string]any) string {
		var out []string
		for _, m := range join["members"].([]any) {
			out = append(out, m.(map[string]any)["username"].(string))
		}
		slices.Sort(out) // listed by user id
		return strings.Join(out, ",")
	}
	ann := connectWS(t, e1)
	token := ann.ok("register", map[string]any{"username": "ann", "password": "password-ann"})["token"]
	if got := names(ann.ok("join", map[string]any{"room": "m"})); got != "ann" {
		t.Fatalf("first join lists %q", got)
	}
	bob := b.user(t, e2, "bob")
	bob.ok("join", map[string]any{"room": "m"})
	tab := func() string {
		t.Helper()
		c := connectWS(t, e1) // another tab of ann's
		c.ok("login", map[string]any{"token": token})
		return names(c.ok("join", map[string]any{"room": "m"}))
	}
	if got := tab(); got != "ann,bob" {
		t.Fatalf("after bob joined on another edge: %q", got)
	}
	if got := tab(); got != "ann,bob" {
		t.Fatalf("unchanged room: %q", got)
	}
	bob.ok("leave", map[string]any{"room": "m"})
	if got := tab(); got != "ann" {
		t.Fatalf("after bob left: %q", got)
	}
}
