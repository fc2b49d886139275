package edgeserver

import (
	"context"
	"encoding/json"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/metadata"

	authv1 "github.com/chatrt/chat/gen/chat/auth/v1"
	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
)

// identity is the authenticated user of a connection.
type identity struct {
	userID, username, token string
	expiresAt               time.Time
}

// client is one WebSocket connection, v1 or legacy. Its fields are owned by its read loop,
// except what the hub uses (deliver, through the socket's queue).
type client struct {
	srv      *Server
	sock     *socket
	id       string // connection id, unique across edges
	remoteIP string
	legacy   bool

	ident       *identity
	rooms       map[string]bool
	connLimit   *rate.Limiter
	userLimit   *rate.Limiter
	limited     int // rate-limited commands in a row
	authTimer   *time.Timer
	legacyState legacyState
	sends       sendQueue
	commands    commandRunner
}

var _ member = (*client)(nil)

// deliver queues an event frame in the client's protocol.
func (c *client) deliver(ev *event) {
	pm, n := ev.v1Frame()
	if c.legacy {
		pm, n = ev.legacyFrame()
	}
	if pm != nil {
		c.sock.sendPrepared(pm, n)
	}
}

// run reads commands until the connection ends, then cleans up after it, exactly once.
func (c *client) run(ctx context.Context) {
	c.armAuthTimer()
	defer c.end()
	for {
		typ, data, err := c.sock.ws.ReadMessage()
		if err != nil {
			return
		}
		if c.sock.closing.Load() {
			continue // closing: wait for the peer's close, run nothing more
		}
		_ = c.sock.ws.SetReadDeadline(time.Now().Add(c.srv.cfg.PongTimeout))
		switch {
		case typ == websocket.BinaryMessage:
			c.sock.closeWith(websocket.CloseUnsupportedData, "binary frames are not supported")
		case !utf8.Valid(data):
			c.sock.closeWith(websocket.CloseInvalidFramePayloadData, "text frame is not valid UTF-8")
		default:
			c.runCommand(ctx, data)
		}
	}
}

// runCommand runs one command to its end on the connection's command goroutine: commands
// still run one at a time, but the deep stack of a command (gRPC calls) is not kept by the idle
// read loop of every connection. The command goroutine lingers like a socket writer (until the
// next tick of the linger clock), so a busy connection's commands reuse one grown stack
// instead of growing a fresh goroutine's for every command.
func (c *client) runCommand(ctx context.Context, data []byte) {
	r := &c.commands
	r.mu.Lock()
	if r.done == nil {
		r.done = make(chan struct{}, 1)
	}
	r.next = data
	start := r.runner.notify()
	r.mu.Unlock()
	if start {
		go c.commandLoop(ctx)
	}
	<-r.done
}

// commandRunner hands commands from the read loop to the command goroutine.
type commandRunner struct {
	mu     sync.Mutex
	next   []byte // the command to run
	runner lingering
	done   chan struct{} // a command has run
}

// commandLoop runs the connection's commands until it has lingered a tick without one.
func (c *client) commandLoop(ctx context.Context) {
	r := &c.commands
	for {
		r.mu.Lock()
		data := r.next
		r.next = nil
		if data == nil {
			r.runner.park()
		}
		r.mu.Unlock()
		if data != nil {
			if c.legacy {
				c.handleLegacy(ctx, data)
			} else {
				c.handle(ctx, data)
			}
			r.done <- struct{}{}
			continue
		}
		if r.runner.wait(c.srv.linger, c.sock.done) {
			continue
		}
		r.mu.Lock()
		end := r.runner.retire()
		r.mu.Unlock()
		if end {
			return
		}
	}
}

// armAuthTimer closes the socket unless it authenticates within the auth timeout.
func (c *client) armAuthTimer() {
	c.authTimer = time.AfterFunc(c.srv.cfg.AuthTimeout, func() {
		c.sock.closeWith(websocket.ClosePolicyViolation, "authentication timeout")
	})
}

// end leaves every room, unbinds the connection, and releases the socket.
func (c *client) end() {
	c.authTimer.Stop()
	c.waitSends()
	c.sock.finish()
	for room := range c.rooms {
		c.srv.hub.detach(room, c)
	}
	if c.ident != nil {
		c.srv.releaseConn(c.id)
		c.srv.limits.release(c.ident.userID)
	}
	c.srv.forget(c)
}

// allow applies the rate limits; sustained abuse closes the connection.
func (c *client) allow() bool {
	ok := c.connLimit.Allow()
	if ok && c.userLimit != nil {
		ok = c.userLimit.Allow()
	}
	if ok {
		c.limited = 0
		return true
	}
	c.limited++
	if c.limited >= c.srv.cfg.AbuseLimit {
		c.sock.closeWith(websocket.ClosePolicyViolation, "rate limit exceeded")
	}
	return false
}

// callCtx is the context of one outgoing call: the edge's lifetime, the call timeout, and the
// browser's address for the auth service's throttling.
func (c *client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.srv.cfg.CallTimeout)
	return metadata.AppendToOutgoingContext(ctx, "x-chat-client-addr", c.remoteIP), cancel
}

func (c *client) reply(id int64, data any, perr *protoError) {
	if perr != nil {
		c.sock.send(encodeJSON(reply{ID: id, Error: perr}))
		return
	}
	if data == nil {
		data = struct{}{}
	}
	c.sock.send(encodeJSON(reply{ID: id, OK: true, Data: data}))
}

// handle runs one protocol v1 command.
func (c *client) handle(ctx context.Context, data []byte) {
	cmd, perr := parseCommand(data)
	if perr != nil {
		c.reply(cmd.ID, nil, perr)
		return
	}
	if !c.allow() {
		c.reply(cmd.ID, nil, errorf(codeRateLimited, "too many commands; slow down"))
		return
	}
	switch cmd.Type {
	case "ping", "register", "login":
	default:
		if c.ident == nil {
			c.reply(cmd.ID, nil, errorf(codeUnauthenticated, "log in first"))
			return
		}
	}
	if cmd.Type == "send" {
		if perr = c.send(ctx, cmd); perr != nil {
			c.reply(cmd.ID, nil, perr)
		}
		return // answered by the sender (see sends.go)
	}
	c.waitSends()
	var out any
	switch cmd.Type {
	case "ping":
		out = map[string]int64{"ts": time.Now().UnixMilli()}
	case "register":
		out, perr = c.register(ctx, cmd)
	case "login":
		out, perr = c.login(ctx, cmd)
	case "logout":
		out, perr = c.logout(ctx)
	case "join":
		// The reply is queued by join itself, before the room's live events.
		if perr = c.join(ctx, cmd); perr == nil {
			return
		}
	case "leave":
		out, perr = c.leave(ctx, cmd)
	case "history":
		out, perr = c.history(ctx, cmd)
	case "who":
		out, perr = c.who(ctx, cmd)
	default:
		perr = errorf(codeBadRequest, "unknown command type %q", cmd.Type)
	}
	c.reply(cmd.ID, out, perr)
}

// loginData is the reply of register and login.
type loginData struct {
	UserID    string `json:"user_id"`
	Username  string `json:"username"`
	Token     string `json:"token"`
	ExpiresAt int64  `json:"expires_at"`
}

func (c *client) register(ctx context.Context, cmd command) (any, *protoError) {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if perr := cmd.decodeFields(&req); perr != nil {
		return nil, perr
	}
	if c.ident != nil {
		return nil, errorf(codeConflict, "already logged in; log out first")
	}
	cctx, cancel := c.callCtx(ctx)
	_, err := c.srv.auth.Register(cctx, &authv1.RegisterRequest{Username: req.Username, Password: req.Password})
	cancel()
	if err != nil {
		return nil, fromRPC(err)
	}
	// Registering logs the socket in, as the protocol's authentication commands do.
	cctx, cancel = c.callCtx(ctx)
	resp, err := c.srv.auth.Login(cctx, &authv1.LoginRequest{Username: req.Username, Password: req.Password})
	cancel()
	if err != nil {
		return nil, fromRPC(err)
	}
	return c.authenticate(ctx, identity{userID: resp.GetUserId(), username: resp.GetUsername(), token: resp.GetToken(), expiresAt: resp.GetExpiresAt().AsTime()})
}

func (c *client) login(ctx context.Context, cmd command) (any, *protoError) {
	var req struct {
		Username *string `json:"username"`
		Password *string `json:"password"`
		Token    *string `json:"token"`
	}
	if perr := cmd.decodeFields(&req); perr != nil {
		return nil, perr
	}
	if c.ident != nil {
		return nil, errorf(codeConflict, "already logged in; log out first")
	}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	switch {
	case req.Token != nil:
		// Checked here, not only by auth: an oversized token must not fail the batch it would
		// share with other connections' logins.
		if err := (&authv1.VerifyTokenRequest{Token: *req.Token}).Validate(); err != nil {
			return nil, errorf(codeBadRequest, "%s", err.Error())
		}
		resp, err := c.srv.calls.verify.do(*req.Token)
		if err != nil {
			return nil, fromRPC(err)
		}
		return c.authenticate(ctx, identity{userID: resp.GetUserId(), username: resp.GetUsername(), token: *req.Token, expiresAt: resp.GetExpiresAt().AsTime()})
	case req.Username != nil && req.Password != nil:
		resp, err := c.srv.auth.Login(cctx, &authv1.LoginRequest{Username: *req.Username, Password: *req.Password})
		if err != nil {
			return nil, fromRPC(err)
		}
		return c.authenticate(ctx, identity{userID: resp.GetUserId(), username: resp.GetUsername(), token: resp.GetToken(), expiresAt: resp.GetExpiresAt().AsTime()})
	}
	return nil, errorf(codeBadRequest, "login needs username and password, or token")
}

// authenticate binds the connection to its user in presence and makes it the socket's
// identity.
func (c *client) authenticate(ctx context.Context, id identity) (any, *protoError) {
	_, err := c.srv.calls.bind.do(&presencev1.BindRequest{ConnId: c.id, UserId: id.userID, Username: id.username, EdgeId: c.srv.cfg.EdgeID})
	if err != nil {
		return nil, fromRPC(err)
	}
	c.ident = &id
	c.userLimit = c.srv.limits.acquire(id.userID)
	c.authTimer.Stop()
	return loginData{UserID: id.userID, Username: id.username, Token: id.token, ExpiresAt: id.expiresAt.UnixMilli()}, nil
}

func (c *client) logout(ctx context.Context) (any, *protoError) {
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	if c.ident.token != "" {
		if _, err := c.srv.auth.Logout(cctx, &authv1.LogoutRequest{Token: c.ident.token}); err != nil {
			return nil, fromRPC(err)
		}
	}
	// The socket stays open, unauthenticated: out of every room and unbound.
	for room := range c.rooms {
		c.srv.hub.detach(room, c)
	}
	c.rooms = map[string]bool{}
	c.srv.releaseConn(c.id)
	c.srv.limits.release(c.ident.userID)
	c.ident, c.userLimit = nil, nil
	// A new login needs a new connection id: presence never rebinds one.
	c.id = c.srv.nextConnID()
	c.armAuthTimer()
	return nil, nil
}

type sincePos struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

type memberData struct {
	UserID      string `json:"user_id"`
	Username    string `json:"username"`
	Connections uint32 `json:"connections,omitempty"`
}

type joinData struct {
	Room        string `json:"room"`
	Epoch       string `json:"epoch"`
	LastSeq     uint64 `json:"last_seq"`
	MemberCount uint32 `json:"member_count"`
	// Members is the JSON array of memberData (user id and username), rendered once per
	// members version of the room (see hub.memberList), and put into the reply by joinReply.
	Members json.RawMessage `json:"-"`
	// Recovered and Missed are answered only to a join with since (then missed is a list,
	// possibly empty).
	Recovered *bool           `json:"recovered,omitempty"`
	Missed    *[]messageEvent `json:"missed,omitempty"`
}

func (c *client) join(ctx context.Context, cmd command) *protoError {
	var req struct {
		Room  string    `json:"room"`
		Since *sincePos `json:"since"`
	}
	if perr := cmd.decodeFields(&req); perr != nil {
		return perr
	}
	return c.joinRoom(ctx, req.Room, req.Since, func(data *joinData) { c.sock.sendParts(joinReply(cmd.ID, data)...) })
}

// joinRoom joins the connection to a room, race-free (see hub), and calls first with the
// join's answer before any live event of the room is queued.
func (c *client) joinRoom(ctx context.Context, room string, since *sincePos, first func(*joinData)) *protoError {
	if err := roomNameError(room); err != nil {
		return err
	}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	fresh := !c.rooms[room]
	if fresh {
		if err := c.srv.hub.attach(cctx, room, c); err != nil {
			return errorf(codeUnavailable, "cannot subscribe to the room; try again")
		}
	}
	known := c.srv.hub.memberList(room)
	resp, err := c.srv.calls.join.do(&roomv1.JoinRequest{
		Room: room, ConnId: c.id, UserId: c.ident.userID, Username: c.ident.username, MemberLimit: uint32(c.srv.cfg.JoinMembers),
		KnownMembersVersion: known.version,
	})
	if err != nil {
		if fresh {
			c.srv.hub.detach(room, c)
		}
		return fromRPC(err)
	}
	list := known
	if !resp.GetMembersUnchanged() || known.version == "" {
		members := make([]memberData, len(resp.GetMembers()))
		for i, m := range resp.GetMembers() {
			members[i] = memberData{UserID: m.GetUserId(), Username: m.GetUsername()}
		}
		list = memberList{version: resp.GetMembersVersion(), json: encodeJSON(members)}
		c.srv.hub.setMemberList(room, list)
	}
	data := &joinData{Room: room, Epoch: resp.GetEpoch(), LastSeq: resp.GetLastSeq(), MemberCount: resp.GetMemberCount(), Members: list.json}
	if since != nil {
		recovered, missed := false, []messageEvent{}
		data.Recovered, data.Missed = &recovered, &missed
		rec, err := c.srv.room.Recover(cctx, &roomv1.RecoverRequest{Room: room, Epoch: since.Epoch, AfterSeq: since.Seq})
		// Recovery is all or nothing, up to the join's position; live events follow it.
		if err == nil && rec.GetRecovered() && rec.GetEpoch() == resp.GetEpoch() {
			recovered = true
			for _, m := range rec.GetMessages() {
				if m.GetSeq() <= resp.GetLastSeq() {
					missed = append(missed, toMessageEvent(m))
				}
			}
		}
	}
	c.rooms[room] = true
	if fresh {
		c.srv.hub.activate(room, c, resp.GetEpoch(), resp.GetLastSeq(), func() { first(data) })
	} else {
		first(data)
	}
	return nil
}

// roomNameError checks a room name before it costs a call (the room service checks it too).
func roomNameError(room string) *protoError {
	if n := utf8.RuneCountInString(room); n < 1 || n > roomv1.MaxRoomChars {
		return errorf(codeBadRequest, "room must be 1..%d characters", roomv1.MaxRoomChars)
	}
	return nil
}

func (c *client) leave(ctx context.Context, cmd command) (any, *protoError) {
	var req struct {
		Room string `json:"room"`
	}
	if perr := cmd.decodeFields(&req); perr != nil {
		return nil, perr
	}
	if !c.rooms[req.Room] {
		return nil, nil
	}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	if _, err := c.srv.room.Leave(cctx, &roomv1.LeaveRequest{Room: req.Room, ConnId: c.id}); err != nil {
		return nil, fromRPC(err)
	}
	delete(c.rooms, req.Room)
	c.srv.hub.detach(req.Room, c)
	return nil, nil
}

// mustBeIn refuses commands on rooms the connection has not joined.
func (c *client) mustBeIn(room string) *protoError {
	if !c.rooms[room] {
		return errorf(codeForbidden, "join the room first")
	}
	return nil
}

// send checks a send and queues it for the sender, which answers it.
func (c *client) send(ctx context.Context, cmd command) *protoError {
	var req struct {
		Room        string `json:"room"`
		Text        string `json:"text"`
		ClientMsgID string `json:"client_msg_id"`
	}
	if perr := cmd.decodeFields(&req); perr != nil {
		return perr
	}
	if perr := c.mustBeIn(req.Room); perr != nil {
		return perr
	}
	switch n := utf8.RuneCountInString(req.Text); {
	case n == 0:
		return errorf(codeBadRequest, "text must not be empty")
	case n > roomv1.MaxTextChars:
		return errorf(codeTooLarge, "text is longer than %d characters", roomv1.MaxTextChars)
	}
	if n := utf8.RuneCountInString(req.ClientMsgID); n > roomv1.MaxClientMsgIDChars {
		return errorf(codeBadRequest, "client_msg_id is longer than %d characters", roomv1.MaxClientMsgIDChars)
	}
	c.enqueueSend(ctx, queuedSend{id: cmd.ID, req: &roomv1.PublishRequest{
		Room: req.Room, ConnId: c.id, UserId: c.ident.userID, Username: c.ident.username, Text: req.Text, ClientMsgId: req.ClientMsgID,
	}})
	return nil
}

func (c *client) publish(ctx context.Context, room, text, clientMsgID string) (*roomv1.PublishResponse, *protoError) {
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.srv.room.Publish(cctx, &roomv1.PublishRequest{
		Room: room, ConnId: c.id, UserId: c.ident.userID, Username: c.ident.username, Text: text, ClientMsgId: clientMsgID,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return resp, nil
}

func (c *client) history(ctx context.Context, cmd command) (any, *protoError) {
	var req struct {
		Room      string `json:"room"`
		BeforeSeq uint64 `json:"before_seq"`
		Limit     uint32 `json:"limit"`
	}
	if perr := cmd.decodeFields(&req); perr != nil {
		return nil, perr
	}
	if perr := c.mustBeIn(req.Room); perr != nil {
		return nil, perr
	}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.srv.room.History(cctx, &roomv1.HistoryRequest{Room: req.Room, BeforeSeq: req.BeforeSeq, Limit: req.Limit})
	if err != nil {
		return nil, fromRPC(err)
	}
	return map[string]any{"messages": toMessageEvents(resp.GetMessages())}, nil
}

func (c *client) who(ctx context.Context, cmd command) (any, *protoError) {
	var req struct {
		Room string `json:"room"`
	}
	if perr := cmd.decodeFields(&req); perr != nil {
		return nil, perr
	}
	if perr := c.mustBeIn(req.Room); perr != nil {
		return nil, perr
	}
	cctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.srv.room.Members(cctx, &roomv1.MembersRequest{Room: req.Room, Limit: uint32(c.srv.cfg.WhoMembers)})
	if err != nil {
		return nil, fromRPC(err)
	}
	members := make([]memberData, len(resp.GetMembers()))
	for i, m := range resp.GetMembers() {
		members[i] = memberData{UserID: m.GetUserId(), Username: m.GetUsername(), Connections: m.GetConnections()}
	}
	return map[string]any{"member_count": resp.GetMemberCount(), "members": members}, nil
}
