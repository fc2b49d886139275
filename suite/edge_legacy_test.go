package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/chatrt/chat/platform/servertest"
	"github.com/gorilla/websocket"
)

// legacyClient speaks the seed tutorial's protocol.
type legacyClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialLegacy(t *testing.T, e *edge) *legacyClient {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(e.url+"/ws/legacy", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &legacyClient{t: t, conn: conn}
}

func (c *legacyClient) send(frame string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads the next frame and compares it byte for byte.
func (c *legacyClient) expect(want string) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, got, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", want, err)
	}
	if string(got) != want {
		c.t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestSeedScenarioLegacy is the seed tutorial end to end on /ws/legacy, with a v1 client in
// the same room.
func TestSeedScenarioLegacy(t *testing.T) {
	t.Parallel()
	b := startBackend(t, nil)
	e := b.startEdge(t, "edge-seed", nil)

	u86 := dialLegacy(t, e)
	u86.send(`{"type":"login","user_id":"10086","first_topic":"1","second_topic":"1"}`)
	u86.expect(`{"status":0,"msg":"注册成功","data":[]}`)
	u86.expect(`{"status":0,"msg":"success","data":{"first_topic":"1","second_topic":"1","msg_type":0,"msg_content":"10086进入了房间","user_id":"10086"}}`)

	u87 := dialLegacy(t, e)
	u87.send(`{"type":"login","user_id":"10087","first_topic":"1","second_topic":"1"}`)
	u87.expect(`{"status":0,"msg":"注册成功","data":[]}`)
	entered87 := `{"status":0,"msg":"success","data":{"first_topic":"1","second_topic":"1","msg_type":0,"msg_content":"10087进入了房间","user_id":"10087"}}`
	u87.expect(entered87)
	u86.expect(entered87)

	// The user_id of a message is the one bound at login, not the payload's.
	u87.send(`{"type":"message","first_topic":"1","second_topic":"1","msg_content":"hello","user_id":"10086"}`)
	hello := `{"status":0,"msg":"success","data":{"first_topic":"1","second_topic":"1","msg_type":0,"msg_content":"hello","user_id":"10087"}}`
	u86.expect(hello)
	u87.expect(hello)

	// Missing fields are refused, and the connection stays usable.
	u86.send(`{"type":"login","first_topic":"1","second_topic":"1"}`)
	var refusal struct {
		Status int    `json:"status"`
		Msg    string `json:"msg"`
		Data   []any  `json:"data"`
	}
	_, raw, err := u86.conn.ReadMessage()
	if err != nil || json.Unmarshal(raw, &refusal) != nil || refusal.Status != 1 || refusal.Msg == "" || refusal.Data == nil {
		t.Fatalf("missing user_id answered %s (%v)", raw, err)
	}

	// A v1 client in room "1/1" chats with them; legacy users appear with their user id as
	// username and a user id that no registered user can have.
	v1 := b.user(t, e, "webuser")
	join := v1.ok("join", map[string]any{"room": "1/1"})
	if join["member_count"] != float64(3) {
		t.Fatalf("v1 join of 1/1: %v", join)
	}
	for _, m := range join["members"].([]any) {
		m := m.(map[string]any)
		if m["username"] == "10086" && m["user_id"] != "legacy:10086" {
			t.Fatalf("legacy member %v", m)
		}
	}
	u86.expect(`{"status":0,"msg":"success","data":{"first_topic":"1","second_topic":"1","msg_type":0,"msg_content":"webuser进入了房间","user_id":"webuser"}}`)
	u87.expect(`{"status":0,"msg":"success","data":{"first_topic":"1","second_topic":"1","msg_type":0,"msg_content":"webuser进入了房间","user_id":"webuser"}}`)
	v1.ok("send", map[string]any{"room": "1/1", "text": "hi from v1"})
	fromV1 := `{"status":0,"msg":"success","data":{"first_topic":"1","second_topic":"1","msg_type":0,"msg_content":"hi from v1","user_id":"webuser"}}`
	u86.expect(fromV1)
	u87.expect(fromV1)

	// 10087 disconnects: nothing of it is left in Redis.
	u87.conn.Close()
	if ev := v1.nextOf("left"); ev["user_id"] != "legacy:10087" || ev["username"] != "10087" {
		t.Fatalf("left event %v", ev)
	}
	waitFor(t, "10087's cleanup", func() bool {
		st, err := b.rdb.Exists(servertest.Ctx(t), b.cfg.presence.Redis.KeyPrefix+"conn:{edge-seed-2}").Result()
		return err == nil && st == 0
	})
	b.checkNothingLeftOf(t, "legacy:10087", "edge-seed-2", "10087")

	// 10086 still chats, with the v1 client.
	u86.send(`{"type":"message","first_topic":"1","second_topic":"1","msg_content":"still here","user_id":"10086"}`)
	if ev := v1.nextOf("message"); ev["text"] != "still here" || ev["user_id"] != "legacy:10086" || ev["username"] != "10086" {
		t.Fatalf("v1 got %v", ev)
	}
}
