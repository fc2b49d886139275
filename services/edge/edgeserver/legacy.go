package edgeserver

import (
	"context"
	"encoding/json"
	"strings"

	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
)

// The seed tutorial's protocol, on /ws/legacy (see protocol-v1.md, "Legacy endpoint").
//
// A legacy client logs into the room (first_topic, second_topic), which is the v1 room named
// "first_topic/second_topic", without a password: its identity is the user id it gives, as in
// the seed. To v1 clients it is the user "legacy:<user_id>" named <user_id>: registered users
// have UUIDs for ids, so a legacy user can never be mistaken for one. The user id of its
// messages is always the one bound at login, whatever a message says.

// legacyPrefix starts the user ids of legacy users.
const legacyPrefix = "legacy:"

// legacyState is a legacy connection's room.
type legacyState struct {
	room          string
	first, second string
}

// legacyReply is a frame of the seed protocol.
type legacyReply struct {
	Status int    `json:"status"`
	Msg    string `json:"msg"`
	Data   any    `json:"data"`
}

// legacyData is the payload of the seed's broadcasts.
type legacyData struct {
	FirstTopic  string `json:"first_topic"`
	SecondTopic string `json:"second_topic"`
	MsgType     int    `json:"msg_type"`
	MsgContent  string `json:"msg_content"`
	UserID      string `json:"user_id"`
}

var noData = []any{}

// legacyFrame renders a room event for legacy clients: messages, and joins as "<user>进入了房间".
// Leaves have no frame (the seed had none). Room names of legacy rooms split at their first
// "/" into the two topics (legacy topics never contain "/").
func legacyFrame(ev *roomv1.RoomEvent) []byte {
	var room, content, user string
	switch e := ev.GetEvent().(type) {
	case *roomv1.RoomEvent_Message:
		room, content, user = e.Message.GetRoom(), e.Message.GetText(), e.Message.GetUsername()
	case *roomv1.RoomEvent_Joined:
		room, user = e.Joined.GetRoom(), e.Joined.GetUsername()
		content = user + "进入了房间"
	default:
		return nil
	}
	first, second, _ := strings.Cut(room, "/")
	return encodeJSON(legacyReply{Msg: "success", Data: legacyData{FirstTopic: first, SecondTopic: second, MsgContent: content, UserID: user}})
}

func (c *client) legacyError(msg string) {
	c.sock.send(encodeJSON(legacyReply{Status: 1, Msg: msg, Data: noData}))
}

// legacyField reads a string field; the seed's PHP clients may send numbers too.
func legacyField(fields map[string]json.RawMessage, name string) string {
	raw, ok := fields[name]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// handleLegacy runs one command of the seed protocol.
func (c *client) handleLegacy(ctx context.Context, data []byte) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		c.legacyError("invalid JSON")
		return
	}
	if !c.allow() {
		c.legacyError("too many messages; slow down")
		return
	}
	first, second := legacyField(fields, "first_topic"), legacyField(fields, "second_topic")
	switch legacyField(fields, "type") {
	case "login":
		userID := legacyField(fields, "user_id")
		if userID == "" || first == "" || second == "" {
			c.legacyError("user_id, first_topic and second_topic are required")
			return
		}
		c.legacyLogin(ctx, userID, first, second)
	case "message":
		text := legacyField(fields, "msg_content")
		if first == "" || second == "" || text == "" {
			c.legacyError("first_topic, second_topic and msg_content are required")
			return
		}
		if c.ident == nil {
			c.legacyError("log in first")
			return
		}
		if first != c.legacyState.first || second != c.legacyState.second {
			c.legacyError("not in this room: log in to it first")
			return
		}
		if _, perr := c.publish(ctx, c.legacyState.room, text, ""); perr != nil {
			c.legacyError(perr.Message)
		}
	default:
		c.legacyError("unknown type")
	}
}

// legacyLogin binds the legacy user (on its first login) and moves it into the room.
func (c *client) legacyLogin(ctx context.Context, userID, first, second string) {
	if strings.Contains(first, "/") || strings.Contains(second, "/") {
		c.legacyError("topics must not contain '/'")
		return
	}
	if !legacyIDOK(userID) {
		c.legacyError("user_id must be 1..64 letters, digits, '_', '-' or '.'")
		return
	}
	room := first + "/" + second
	if perr := roomNameError(room); perr != nil {
		c.legacyError(perr.Message)
		return
	}
	if c.ident == nil {
		if _, perr := c.authenticate(ctx, identity{userID: legacyPrefix + userID, username: userID}); perr != nil {
			c.legacyError(perr.Message)
			return
		}
	} else if c.ident.username != userID {
		c.legacyError("already logged in as " + c.ident.username)
		return
	}
	if old := c.legacyState.room; old != "" && old != room {
		cctx, cancel := c.callCtx(ctx)
		_, err := c.srv.room.Leave(cctx, &roomv1.LeaveRequest{Room: old, ConnId: c.id})
		cancel()
		if err != nil {
			c.legacyError(fromRPC(err).Message)
			return
		}
		delete(c.rooms, old)
		c.srv.hub.detach(old, c)
	}
	c.legacyState = legacyState{room: room, first: first, second: second}
	perr := c.joinRoom(ctx, room, nil, func(*joinData) {
		c.sock.send(encodeJSON(legacyReply{Msg: "注册成功", Data: noData}))
	})
	if perr != nil {
		c.legacyState = legacyState{}
		c.legacyError(perr.Message)
	}
}

func legacyIDOK(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-' || ch == '.') {
			return false
		}
	}
	return true
}
