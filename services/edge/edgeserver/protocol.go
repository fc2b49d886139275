package edgeserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
)

// Error codes of protocol v1.
const (
	codeBadRequest      = "bad_request"
	codeUnauthenticated = "unauthenticated"
	codeForbidden       = "forbidden"
	codeNotFound        = "not_found"
	codeConflict        = "conflict"
	codeRateLimited     = "rate_limited"
	codeTooLarge        = "too_large"
	codeUnavailable     = "unavailable"
	codeInternal        = "internal"
)

// protoError is an error reply of protocol v1.
type protoError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *protoError) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *protoError {
	return &protoError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// fromRPC converts a gRPC error of a service into a protocol error: the service's message is
// shown for input errors (it says what is wrong), a generic one for the rest.
func fromRPC(err error) *protoError {
	var pe *protoError
	if errors.As(err, &pe) {
		return pe
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return errorf(codeBadRequest, "%s", st.Message())
	case codes.Unauthenticated:
		return errorf(codeUnauthenticated, "%s", st.Message())
	case codes.PermissionDenied:
		return errorf(codeForbidden, "%s", st.Message())
	case codes.NotFound:
		return errorf(codeNotFound, "%s", st.Message())
	case codes.AlreadyExists, codes.FailedPrecondition, codes.Aborted:
		return errorf(codeConflict, "%s", st.Message())
	case codes.ResourceExhausted:
		return errorf(codeRateLimited, "%s", st.Message())
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return errorf(codeUnavailable, "service unavailable; try again")
	default:
		return errorf(codeInternal, "internal error")
	}
}

// reply is the server's answer to one command.
type reply struct {
	ID    int64       `json:"id"`
	OK    bool        `json:"ok"`
	Data  any         `json:"data,omitempty"`
	Error *protoError `json:"error,omitempty"`
}

// joinReply renders the reply to a join, in parts: its member list is JSON already (kept per
// room, shared by the joins of the room) and goes in as it is, neither copied nor scanned
// again by encoding/json.
func joinReply(id int64, d *joinData) [][]byte {
	head := encodeJSON(reply{ID: id, OK: true, Data: d}) // ends with "}}": data's, the reply's
	head = append(head[:len(head)-2], `,"members":`...)
	return [][]byte{head, d.Members, joinReplyEnd}
}

// joinReplyEnd closes the data object and the reply of joinReply.
var joinReplyEnd = []byte("}}")

// encodeJSON encodes v without HTML escaping (text is shown as the sender wrote it; clients
// render it as text).
func encodeJSON(v any) []byte {
	b := encodeBuffers.Get().(*bytes.Buffer)
	defer func() {
		if b.Cap() <= 64<<10 { // a rare large reply's buffer is not kept
			encodeBuffers.Put(b)
		}
	}()
	b.Reset()
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	// Only the edge's own types, made of strings, numbers and slices of them, are encoded
	// here: encoding them cannot fail.
	_ = enc.Encode(v)
	// The frame outlives the buffer (it waits in the socket's queue): one copy of its exact
	// size, instead of the growing buffer's several.
	return bytes.Clone(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

// encodeBuffers are encodeJSON's scratch buffers.
var encodeBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// messageEvent is a `message` event (also the items of history and missed). Besides the
// fields of protocol v1 it carries the seq's epoch, so a client can tell that a room's sequence
// restarted (its history was lost) without rejoining.
type messageEvent struct {
	Type     string `json:"type"`
	Room     string `json:"room"`
	Seq      uint64 `json:"seq"`
	Epoch    string `json:"epoch"`
	UserID   string `json:"user_id"`
	Username string `json:"username"`
	Text     string `json:"text"`
	TS       int64  `json:"ts"`
}

// memberEvent is a `joined` or `left` event.
type memberEvent struct {
	Type     string `json:"type"`
	Room     string `json:"room"`
	UserID   string `json:"user_id"`
	Username string `json:"username"`
	TS       int64  `json:"ts"`
}

func toMessageEvent(m *roomv1.Message) messageEvent {
	return messageEvent{
		Type: "message", Room: m.GetRoom(), Seq: m.GetSeq(), Epoch: m.GetEpoch(), UserID: m.GetUserId(), Username: m.GetUsername(),
		Text: m.GetText(), TS: m.GetTs().AsTime().UnixMilli(),
	}
}

func toMessageEvents(ms []*roomv1.Message) []messageEvent {
	out := make([]messageEvent, len(ms))
	for i, m := range ms {
		out[i] = toMessageEvent(m)
	}
	return out
}

// v1Frame renders a room event as protocol v1 JSON.
func v1Frame(ev *roomv1.RoomEvent) []byte {
	switch e := ev.GetEvent().(type) {
	case *roomv1.RoomEvent_Message:
		return encodeJSON(toMessageEvent(e.Message))
	case *roomv1.RoomEvent_Joined:
		j := e.Joined
		return encodeJSON(memberEvent{Type: "joined", Room: j.GetRoom(), UserID: j.GetUserId(), Username: j.GetUsername(), TS: j.GetTs().AsTime().UnixMilli()})
	case *roomv1.RoomEvent_Left:
		l := e.Left
		return encodeJSON(memberEvent{Type: "left", Room: l.GetRoom(), UserID: l.GetUserId(), Username: l.GetUsername(), TS: l.GetTs().AsTime().UnixMilli()})
	}
	return nil
}

// command is the envelope of a client command; the rest of the fields are decoded per type.
type command struct {
	ID   int64
	Type string
	Raw  []byte
}

// Markers of an id or type the fast path of parseCommand did not see.
const (
	absentID   = math.MinInt64
	absentType = "\x00absent"
)

// parseCommand reads the envelope. A frame that is not a JSON object or has no integer id is
// answered with id 0.
func parseCommand(data []byte) (command, *protoError) {
	trimmed := bytes.TrimSpace(data)
	// json.Unmarshal checks the whole frame before it decodes anything.
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return command{}, errorf(codeBadRequest, "a frame must be one JSON object")
	}
	// The common case in one pass: an integer id and a string type. Fields that stay at their
	// markers were absent or null (or held the very marker): the slow path below tells which.
	// (Pointer fields would cost a reflect.New each, a visible part of a connection's set-up.)
	fast := struct {
		ID   int64  `json:"id"`
		Type string `json:"type"`
	}{ID: absentID, Type: absentType}
	if json.Unmarshal(trimmed, &fast) == nil && fast.ID != absentID && fast.Type != absentType {
		return command{ID: fast.ID, Type: fast.Type, Raw: trimmed}, nil
	}
	// Otherwise find out what is wrong, field by field.
	var env struct {
		ID   json.RawMessage `json:"id"`
		Type json.RawMessage `json:"type"`
	}
	if err := json.Unmarshal(trimmed, &env); err != nil {
		return command{}, errorf(codeBadRequest, "a frame must be one JSON object")
	}
	var id int64
	if len(env.ID) == 0 || json.Unmarshal(env.ID, &id) != nil {
		return command{}, errorf(codeBadRequest, "id must be an integer")
	}
	cmd := command{ID: id, Raw: trimmed}
	if len(env.Type) == 0 || json.Unmarshal(env.Type, &cmd.Type) != nil {
		return cmd, errorf(codeBadRequest, "type must be a string")
	}
	return cmd, nil
}

// decodeFields decodes a command's fields into v; a field of the wrong type is bad_request.
func (c command) decodeFields(v any) *protoError {
	if err := json.Unmarshal(c.Raw, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errorf(codeBadRequest, "field %s must be %s", te.Field, jsonKind(te.Type.Kind().String()))
		}
		return errorf(codeBadRequest, "malformed fields: %v", err)
	}
	return nil
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"), strings.HasPrefix(goKind, "float"):
		return "a number"
	case goKind == "string":
		return "a string"
	case goKind == "bool":
		return "a boolean"
	case goKind == "ptr", goKind == "struct":
		return "an object"
	}
	return "of another type"
}
