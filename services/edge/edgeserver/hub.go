package edgeserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
)

// The hub fans room events out to this edge's connections.
//
// For each room with at least one local member the edge holds one Redis subscription (all on
// one pub/sub connection) and drops it when the last local member leaves. Each event is
// decoded once and rendered once per protocol (PreparedMessage), then queued to each member:
// no Redis or gRPC call per recipient.
//
// Pub/sub is at most once, so the hub tracks per room the last seq it delivered and delivers
// message events strictly in seq order: a gap (a lost event) is filled from the room's history
// (Recover) before newer events go out, and after the pub/sub connection is re-established
// every room is backfilled from its last seq.
//
// A join is race-free: the connection is attached (and the room subscribed) before the Join
// call, events arriving meanwhile are buffered for it, and when Join answers last_seq J the
// reply is queued first, then the buffered events with seq > J; events with seq <= J are not
// delivered to it. The first join of a room on the edge also gives the hub its position; other
// joins of the room wait for it, so that no join's J is older than the hub's position (events
// at or before the position are not passed on).

// recoverer is what the hub needs of the room service.
type recoverer interface {
	Recover(ctx context.Context, room, epoch string, afterSeq uint64) (*roomv1.RecoverResponse, error)
}

// member is a connection as the hub sees it.
type member interface {
	// deliver queues an event frame for the connection (without blocking).
	deliver(ev *event)
}

// event is one room event, rendered lazily once per protocol.
type event struct {
	pb      *roomv1.RoomEvent
	v1Once  sync.Once
	v1      *websocket.PreparedMessage
	v1Size  int
	legOnce sync.Once
	leg     *websocket.PreparedMessage
	legSize int
}

func (e *event) seq() uint64   { return e.pb.GetMessage().GetSeq() }
func (e *event) epoch() string { return e.pb.GetMessage().GetEpoch() }
func (e *event) isMessage() bool {
	_, ok := e.pb.GetEvent().(*roomv1.RoomEvent_Message)
	return ok
}

// v1Frame is the event as protocol v1 JSON, prepared once.
func (e *event) v1Frame() (*websocket.PreparedMessage, int) {
	e.v1Once.Do(func() {
		b := v1Frame(e.pb)
		e.v1, _ = websocket.NewPreparedMessage(websocket.TextMessage, b)
		e.v1Size = len(b)
	})
	return e.v1, e.v1Size
}

// legacyFrame is the event in the seed protocol, prepared once; nil when it has none.
func (e *event) legacyFrame() (*websocket.PreparedMessage, int) {
	e.legOnce.Do(func() {
		if b := legacyFrame(e.pb); b != nil {
			e.leg, _ = websocket.NewPreparedMessage(websocket.TextMessage, b)
			e.legSize = len(b)
		}
	})
	return e.leg, e.legSize
}

// membership is one member's state in a room subscription.
type membership struct {
	// joining: the Join call is in flight; events are buffered in buf.
	joining bool
	buf     []*event
	// epoch and after: message events of this epoch with seq <= after are not delivered
	// (they precede the join).
	epoch string
	after uint64
}

// precedesJoin tells whether a message event came before the member joined.
func (ms *membership) precedesJoin(ev *event) bool {
	return ev.isMessage() && ev.epoch() == ms.epoch && ev.seq() <= ms.after
}

// roomSub is the edge's subscription to one room.
type roomSub struct {
	name, channel string
	members       map[member]*membership
	// subscribed is closed when Redis confirmed the subscription.
	subscribed chan struct{}
	confirmed  bool
	// known says epoch and lastSeq are set (by the first join's answer). Until then, leader
	// is the member whose join will set them; changed is closed (and replaced) when either
	// changes, waking joins that wait for them.
	known   bool
	leader  member
	changed chan struct{}
	epoch   string
	lastSeq uint64
	// held: events received before the position was known.
	held []*event
	// filling: a backfill is running; events wait in pending.
	filling bool
	pending []*event
	// list is the room's member list as the last join answered it.
	list memberList
}

// memberList is a room's member list (as listed in join replies), rendered as JSON, and the
// room service's members version that identifies it.
type memberList struct {
	version string
	json    json.RawMessage
}

// memberList is the room's last known member list (none while the edge is not in the room).
// A join passes its version on, and the room service lists members again only if it changed.
func (h *hub) memberList(room string) memberList {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub := h.subs[room]; sub != nil {
		return sub.list
	}
	return memberList{}
}

// setMemberList keeps a room's member list for the next joins. Answers may arrive out of
// order: a version always names the same list, so an older one is stale, never wrong.
func (h *hub) setMemberList(room string, list memberList) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub := h.subs[room]; sub != nil {
		sub.list = list
	}
}

type hub struct {
	log       *slog.Logger
	rdb       redis.UniversalClient
	prefix    string
	rooms     recoverer
	timeout   time.Duration
	mu        sync.Mutex
	subs      map[string]*roomSub // by room name
	byChannel map[string]*roomSub
	ps        *redis.PubSub
	wg        sync.WaitGroup // backfills
	ctx       context.Context
}

func newHub(ctx context.Context, log *slog.Logger, rdb redis.UniversalClient, roomPrefix string, rooms recoverer, callTimeout time.Duration) *hub {
	return &hub{
		log: log, rdb: rdb, prefix: roomPrefix, rooms: rooms, timeout: callTimeout, ctx: ctx,
		subs: map[string]*roomSub{}, byChannel: map[string]*roomSub{},
		ps: rdb.Subscribe(ctx),
	}
}

// attach registers m as joining room, subscribing the edge to the room if needed, and waits
// until the subscription is confirmed (so no event published after it can be missed).
func (h *hub) attach(ctx context.Context, room string, m member) error {
	for {
		h.mu.Lock()
		sub := h.subs[room]
		if sub == nil {
			sub = &roomSub{
				name: room, channel: roomv1.EventChannel(h.prefix, room),
				members: map[member]*membership{}, subscribed: make(chan struct{}), changed: make(chan struct{}),
			}
			if err := h.ps.Subscribe(ctx, sub.channel); err != nil {
				h.mu.Unlock()
				return err
			}
			h.subs[room] = sub
			h.byChannel[sub.channel] = sub
		}
		if sub.members[m] == nil {
			switch {
			case sub.known:
			case sub.leader == nil:
				sub.leader = m
			default:
				// Another join will fix the room's position: join after it.
				wait := sub.changed
				h.mu.Unlock()
				select {
				case <-wait:
					continue
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			sub.members[m] = &membership{joining: true}
		}
		subscribed := sub.subscribed
		h.mu.Unlock()

		select {
		case <-subscribed:
			return nil
		case <-ctx.Done():
			h.detach(room, m)
			return ctx.Err()
		}
	}
}

// activate ends m's join: first is queued before any event of the room (the join reply),
// then the events buffered since attach that follow the join's position.
func (h *hub) activate(room string, m member, epoch string, lastSeq uint64, first func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := h.subs[room]
	ms := sub.lookup(m)
	if ms == nil {
		return
	}
	first()
	ms.joining, ms.epoch, ms.after = false, epoch, lastSeq
	for _, ev := range ms.buf {
		if !ms.precedesJoin(ev) {
			m.deliver(ev)
		}
	}
	ms.buf = nil
	if !sub.known {
		sub.known, sub.epoch, sub.lastSeq, sub.leader = true, epoch, lastSeq, nil
		sub.signal()
		held := sub.held
		sub.held = nil
		for _, ev := range held {
			h.process(sub, ev)
		}
	}
}

// signal wakes the joins waiting for the room's position.
func (s *roomSub) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *roomSub) lookup(m member) *membership {
	if s == nil {
		return nil
	}
	return s.members[m]
}

// detach removes m from room, dropping the subscription with the last local member.
func (h *hub) detach(room string, m member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := h.subs[room]
	if sub == nil {
		return
	}
	delete(sub.members, m)
	if sub.leader == m {
		sub.leader = nil
		sub.signal()
	}
	if len(sub.members) > 0 {
		return
	}
	sub.signal()
	delete(h.subs, room)
	delete(h.byChannel, sub.channel)
	ctx, cancel := context.WithTimeout(h.ctx, h.timeout)
	defer cancel()
	if err := h.ps.Unsubscribe(ctx, sub.channel); err != nil && h.ctx.Err() == nil {
		h.log.Warn("unsubscribe failed", "room", room, "err", err)
	}
}

// run reads the pub/sub connection until ctx is done.
func (h *hub) run(ctx context.Context) {
	defer h.wg.Wait()
	awaitingPong := false
	for {
		h.mu.Lock()
		ps := h.ps
		h.mu.Unlock()
		msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if awaitingPong {
					// The connection is silent even to a ping: replace it.
					h.log.Warn("redis pub/sub connection unresponsive; reconnecting")
					h.reconnect(ctx)
					awaitingPong = false
					continue
				}
				awaitingPong = ps.Ping(ctx) == nil
				continue
			}
			// go-redis reconnects and resubscribes on the next receive; the confirmations
			// trigger the backfills.
			h.log.Warn("redis pub/sub connection lost; resubscribing", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		awaitingPong = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				h.confirmed(ctx, m.Channel)
			}
		case *redis.Message:
			h.received(m.Channel, m.Payload)
		}
	}
}

// reconnect replaces the pub/sub connection, subscribing every current room again.
func (h *hub) reconnect(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_ = h.ps.Close()
	h.ps = h.rdb.Subscribe(ctx)
	for ch := range h.byChannel {
		if err := h.ps.Subscribe(ctx, ch); err != nil {
			h.log.Warn("resubscribe failed", "err", err)
		}
	}
}

// confirmed handles Redis' confirmation of a subscription: the first one opens the room to
// joins; a later one (after a reconnection) backfills what may have been lost meanwhile.
func (h *hub) confirmed(ctx context.Context, channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := h.byChannel[channel]
	if sub == nil {
		return
	}
	if !sub.confirmed {
		sub.confirmed = true
		close(sub.subscribed)
		return
	}
	if sub.known && !sub.filling {
		h.startFill(ctx, sub, nil)
	}
}

// received handles one event from Redis.
func (h *hub) received(channel, payload string) {
	pb := &roomv1.RoomEvent{}
	if err := proto.Unmarshal([]byte(payload), pb); err != nil {
		h.log.Error("undecodable room event", "channel", channel, "err", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := h.byChannel[channel]
	if sub == nil {
		return
	}
	h.process(sub, &event{pb: pb})
}

// process applies one event to a room in order; h.mu is held.
func (h *hub) process(sub *roomSub, ev *event) {
	if !sub.known {
		// No member has joined yet, so the position is unknown: hold the event until the
		// first join answers it.
		sub.held = append(sub.held, ev)
		return
	}
	if sub.filling {
		sub.pending = append(sub.pending, ev)
		return
	}
	if ev.isMessage() {
		if ev.epoch() != sub.epoch {
			// The room's sequence (re)started: its first message, or its history was lost.
			sub.epoch, sub.lastSeq = ev.epoch(), 0
		}
		switch s := ev.seq(); {
		case s <= sub.lastSeq:
			return // already delivered
		case s > sub.lastSeq+1:
			h.startFill(h.ctx, sub, ev)
			return
		}
		sub.lastSeq = ev.seq()
	}
	h.fanOut(sub, ev)
}

// fanOut queues ev to the room's members; h.mu is held.
func (h *hub) fanOut(sub *roomSub, ev *event) {
	for m, ms := range sub.members {
		switch {
		case ms.joining:
			ms.buf = append(ms.buf, ev)
		case ms.precedesJoin(ev):
		default:
			m.deliver(ev)
		}
	}
}

// startFill backfills a room from its last delivered seq; trigger (if any) is the event that
// showed the gap. h.mu is held.
func (h *hub) startFill(ctx context.Context, sub *roomSub, trigger *event) {
	sub.filling = true
	if trigger != nil {
		sub.pending = append(sub.pending, trigger)
	}
	room, epoch, after := sub.name, sub.epoch, sub.lastSeq
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		resp := h.recoverWithRetry(ctx, room, epoch, after)
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.subs[room] != sub {
			return // the room was dropped meanwhile
		}
		sub.filling = false
		if resp.GetRecovered() {
			for _, m := range resp.GetMessages() {
				if m.GetSeq() > sub.lastSeq {
					sub.lastSeq = m.GetSeq()
					h.fanOut(sub, &event{pb: &roomv1.RoomEvent{Event: &roomv1.RoomEvent_Message{Message: m}}})
				}
			}
		} else if resp != nil {
			// The history no longer reaches back: what is lost is lost; clients see the seq
			// jump and can reload the history. Continue from the room's current position.
			h.log.Warn("room backfill not possible; continuing with a gap", "room", room, "after", after, "epoch", epoch)
			sub.epoch, sub.lastSeq = resp.GetEpoch(), resp.GetLastSeq()
		}
		pending := sub.pending
		sub.pending = nil
		for _, ev := range pending {
			h.process(sub, ev)
		}
	}()
}

// recoverWithRetry asks the room service for the messages after a position, retrying while it
// is unavailable, until ctx ends. It returns nil when ctx ended first.
func (h *hub) recoverWithRetry(ctx context.Context, room, epoch string, after uint64) *roomv1.RecoverResponse {
	backoff := 50 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, h.timeout)
		resp, err := h.rooms.Recover(cctx, room, epoch, after)
		cancel()
		if err == nil {
			return resp
		}
		h.log.Warn("room backfill failed; retrying", "room", room, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// close ends the pub/sub connection.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	_ = h.ps.Close()
}
