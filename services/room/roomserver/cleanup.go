package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
)

// Ghost cleanup.
//
// A connection whose edge dies never sends its LeaveAll. Presence notices (the edge's lease
// lapses), unbinds the connection and appends a CONNECTION_UNBOUND event to its event stream.
// The room replicas read that stream in one consumer group, and take each unbound connection
// out of all its rooms, publishing `left` where it was a user's last connection.
//
// Why the event stream rather than reading leases: the stream is presence's published contract
// (its keys are its own), delivery is at least once (presence never loses an unbind event, and
// an event whose consumer died is claimed by another replica after CleanupClaimIdle), and
// LeaveAll is idempotent, so a duplicate, or a clean close whose edge already called LeaveAll,
// changes nothing and announces nothing twice.

const (
	cleanupBatch = 100
	cleanupBlock = time.Second
)

// RunCleanup consumes the presence event stream until ctx is done.
func (s *Service) RunCleanup(ctx context.Context) {
	c := &cleanupState{consumer: consumerName()}
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err := s.cleanupOnce(ctx, c); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("presence event cleanup failed; retrying", "err", err)
			// The group may be gone with a Redis that restarted empty: make sure of it again.
			c.grouped = false
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			continue
		}
		backoff = 0
	}
}

// cleanupState is what the cleanup loop remembers between rounds.
type cleanupState struct {
	consumer string
	// grouped says the consumer group is known to exist.
	grouped bool
	// claimed is when events left by dead consumers were last taken over.
	claimed time.Time
}

// cleanupOnce makes sure the group exists, takes over events left by dead consumers (every
// half CleanupClaimIdle: they are not claimable sooner), and handles one batch of new events
// (waiting up to cleanupBlock for some).
func (s *Service) cleanupOnce(ctx context.Context, c *cleanupState) error {
	rdb, stream, group := s.store.rdb, s.cfg.PresenceEvents, s.cfg.CleanupGroup
	if !c.grouped {
		// From the start of the stream: the group is created once, and the first replica then
		// cleans whatever the stream already says was unbound.
		err := rdb.XGroupCreateMkStream(ctx, stream, group, "0").Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("create consumer group: %w", err)
		}
		c.grouped = true
	}

	if time.Since(c.claimed) >= s.cfg.CleanupClaimIdle/2 {
		start := "0-0"
		for {
			claimed, next, err := rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: stream, Group: group, Consumer: c.consumer, MinIdle: s.cfg.CleanupClaimIdle, Start: start, Count: cleanupBatch,
			}).Result()
			if err != nil {
				return fmt.Errorf("claim stale events: %w", err)
			}
			if err := s.handleEvents(ctx, claimed); err != nil {
				return err
			}
			if next == "0-0" || len(claimed) == 0 {
				break
			}
			start = next
		}
		c.claimed = time.Now()
	}

	streams, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: c.consumer, Streams: []string{stream, ">"}, Count: cleanupBatch, Block: cleanupBlock,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read presence events: %w", err)
	}
	for _, st := range streams {
		if err := s.handleEvents(ctx, st.Messages); err != nil {
			return err
		}
	}
	return nil
}

// handleEvents takes every unbound connection out of its rooms (all of the batch together)
// and acknowledges the handled events together. An event that fails stays pending (with
// those after it), to be claimed again.
func (s *Service) handleEvents(ctx context.Context, msgs []redis.XMessage) error {
	var unbound []*presencev1.PresenceEvent
	var at []int // the message of each unbound event
	for i, m := range msgs {
		raw, _ := m.Values["event"].(string)
		ev := &presencev1.PresenceEvent{}
		if err := proto.Unmarshal([]byte(raw), ev); err != nil {
			// Not ours to fix, and retrying cannot help: acknowledge and say so.
			s.log.Error("undecodable presence event; skipped", "id", m.ID, "err", err)
		} else if ev.GetKind() == presencev1.PresenceEventKind_PRESENCE_EVENT_KIND_CONNECTION_UNBOUND {
			unbound, at = append(unbound, ev), append(at, i)
		}
	}
	ids := make([]string, len(unbound))
	for j, ev := range unbound {
		ids[j] = ev.GetConnId()
	}
	rooms, errs := s.leaveAll(ctx, ids)
	handled := len(msgs)
	var failure error
	for j, ev := range unbound {
		if errs[j] != nil {
			handled = at[j]
			failure = fmt.Errorf("clean up connection %q: %w", ev.GetConnId(), errs[j])
			break
		}
		if len(rooms[j]) > 0 {
			s.log.Info("unbound connection taken out of its rooms", "conn", ev.GetConnId(), "rooms", len(rooms[j]), "reason", ev.GetReason().String())
		}
	}
	if handled > 0 {
		ackIDs := make([]string, handled)
		for i := range handled {
			ackIDs[i] = msgs[i].ID
		}
		if err := s.store.rdb.XAck(ctx, s.cfg.PresenceEvents, s.cfg.CleanupGroup, ackIDs...).Err(); err != nil {
			return fmt.Errorf("acknowledge presence events: %w", err)
		}
	}
	return failure
}

// consumerName names this replica in the consumer group: host, pid and a random part.
func consumerName() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}
