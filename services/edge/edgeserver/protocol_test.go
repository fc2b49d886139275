package edgeserver

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http/httptest"
	"reflect"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		frame   string
		id      int64
		typ     string
		errCode string
	}{
		{`{"id":7,"type":"ping"}`, 7, "ping", ""},
		{`  {"id":-1,"type":"send","room":"r"}  `, -1, "send", ""},
		{`{"id":7}`, 7, "", codeBadRequest},
		{`{"id":7,"type":3}`, 7, "", codeBadRequest},
		{`{"type":"ping"}`, 0, "", codeBadRequest},
		{`{"id":"7","type":"ping"}`, 0, "", codeBadRequest},
		{`{"id":7.5,"type":"ping"}`, 0, "", codeBadRequest},
		{`[{"id":7}]`, 0, "", codeBadRequest},
		{`{"id":7,"type":"ping"`, 0, "", codeBadRequest},
		{``, 0, "", codeBadRequest},
		// The fast path's markers, sent for real, still parse (by the slow path).
		{`{"id":-9223372036854775808,"type":"ping"}`, math.MinInt64, "ping", ""},
		{`{"id":7,"type":"\u0000absent"}`, 7, "\x00absent", ""},
		{`{"id":null,"type":"ping"}`, 0, "ping", ""},
	}
	for _, tc := range tests {
		cmd, perr := parseCommand([]byte(tc.frame))
		gotCode := ""
		if perr != nil {
			gotCode = perr.Code
		}
		if cmd.ID != tc.id || cmd.Type != tc.typ || gotCode != tc.errCode {
			t.Errorf("parseCommand(%s) = id %d type %q err %q, want %d %q %q", tc.frame, cmd.ID, cmd.Type, gotCode, tc.id, tc.typ, tc.errCode)
		}
	}
}

func TestDecodeFieldsNamesTheField(t *testing.T) {
	cmd, _ := parseCommand([]byte(`{"id":1,"type":"history","room":"r","limit":"ten"}`))
	var req struct {
		Room  string `json:"room"`
		Limit uint32 `json:"limit"`
	}
	perr := cmd.decodeFields(&req)
	if perr == nil || perr.Code != codeBadRequest || perr.Message != "field limit must be a number" {
		t.Fatalf("got %v", perr)
	}
}

func TestFromRPC(t *testing.T) {
	tests := []struct {
		code codes.Code
		want string
	}{
		{codes.InvalidArgument, codeBadRequest},
		{codes.Unauthenticated, codeUnauthenticated},
		{codes.PermissionDenied, codeForbidden},
		{codes.NotFound, codeNotFound},
		{codes.AlreadyExists, codeConflict},
		{codes.FailedPrecondition, codeConflict},
		{codes.ResourceExhausted, codeRateLimited},
		{codes.Unavailable, codeUnavailable},
		{codes.DeadlineExceeded, codeUnavailable},
		{codes.Internal, codeInternal},
		{codes.Unknown, codeInternal},
	}
	for _, tc := range tests {
		got := fromRPC(status.Error(tc.code, "secret backend detail"))
		if got.Code != tc.want {
			t.Errorf("%v -> %s, want %s", tc.code, got.Code, tc.want)
		}
		if tc.want == codeInternal && got.Message != "internal error" {
			t.Errorf("%v leaks %q", tc.code, got.Message)
		}
	}
}

func TestCheckOrigin(t *testing.T) {
	s := &Server{origins: Config{AllowedOrigins: "https://app.example.com"}.origins()}
	for _, tc := range []struct {
		host, origin string
		ok           bool
	}{
		{"chat.example.com", "", true},
		{"chat.example.com", "https://chat.example.com", true},
		{"chat.example.com", "https://CHAT.example.com", true},
		{"chat.example.com", "https://app.example.com", true},
		{"chat.example.com", "https://app.example.com.evil.io", false},
		{"chat.example.com", "https://evil.io/https://app.example.com", false},
		{"chat.example.com", "not a url", false},
	} {
		r := httptest.NewRequest("GET", "http://"+tc.host+"/ws", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := s.checkOrigin(r); got != tc.ok {
			t.Errorf("host %s origin %q: %v, want %v", tc.host, tc.origin, got, tc.ok)
		}
	}
}

// TestJoinReply: the join reply with its member list spliced in is the JSON that encoding the
// whole reply would give.
func TestJoinReply(t *testing.T) {
	recovered := true
	missed := []messageEvent{{Type: "message", Room: "r", Seq: 3, Text: "x"}}
	members := []memberData{{UserID: "u1", Username: `"quoted" <b>`}, {UserID: "u2", Username: "é"}}
	for _, d := range []*joinData{
		{Room: "r", Epoch: "e", LastSeq: 3, MemberCount: 2, Members: encodeJSON(members)},
		{Room: "r", MemberCount: 0, Members: encodeJSON([]memberData{}), Recovered: &recovered, Missed: &missed},
	} {
		got := bytes.Join(joinReply(7, d), nil)
		full := map[string]any{"room": d.Room, "epoch": d.Epoch, "last_seq": d.LastSeq, "member_count": d.MemberCount, "members": d.Members}
		if d.Recovered != nil {
			full["recovered"], full["missed"] = d.Recovered, d.Missed
		}
		want := encodeJSON(map[string]any{"id": 7, "ok": true, "data": full})
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	}
}
