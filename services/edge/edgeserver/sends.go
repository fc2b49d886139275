package edgeserver

import (
	"context"
	"sync"

	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
)

// A connection's `send` commands do not wait for the room service one by one: they queue, and
// one sender at a time passes everything queued to the room service in one PublishBatch (one
// call, one Redis round trip), in order. Under load a busy publisher's messages so reach the
// room, and then every subscriber's socket, together instead of one round trip apart. Any
// other command waits until the queued sends are answered, so commands still take effect in
// the order they were sent.

// queuedSend is one send waiting for the room service.
type queuedSend struct {
	id  int64
	req *roomv1.PublishRequest
}

// sendQueue is a connection's queued sends; the sender goroutine runs only while it is not
// empty.
type sendQueue struct {
	mu      sync.Mutex
	queue   []queuedSend
	running bool
	idle    chan struct{} // closed when the queue is empty and no sender runs
}

// enqueue adds a send, starting the sender if none runs.
func (c *client) enqueueSend(ctx context.Context, s queuedSend) {
	q := &c.sends
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queue = append(q.queue, s)
	if !q.running {
		q.running = true
		q.idle = make(chan struct{})
		go c.sendLoop(ctx)
	}
}

// waitSends returns once every queued send has been answered.
func (c *client) waitSends() {
	q := &c.sends
	q.mu.Lock()
	if !q.running {
		q.mu.Unlock()
		return
	}
	idle := q.idle
	q.mu.Unlock()
	<-idle
}

// sendLoop publishes queued sends, in batches, until the queue is empty.
func (c *client) sendLoop(ctx context.Context) {
	q := &c.sends
	for {
		q.mu.Lock()
		batch := q.queue[:publishBatchLen(q.queue)]
		q.queue = q.queue[len(batch):]
		if len(batch) == 0 {
			q.queue = nil
			q.running = false
			close(q.idle)
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		c.publishBatch(ctx, batch)
	}
}

func (c *client) publishBatch(ctx context.Context, batch []queuedSend) {
	req := &roomv1.PublishBatchRequest{Messages: make([]*roomv1.PublishRequest, len(batch))}
	for i, s := range batch {
		req.Messages[i] = s.req
	}
	cctx, cancel := c.callCtx(ctx)
	resp, err := c.srv.room.PublishBatch(cctx, req)
	cancel()
	resps, errs := splitResults(len(batch), resp.GetResults(), err)
	for i, s := range batch {
		if errs[i] != nil {
			c.reply(s.id, nil, fromRPC(errs[i]))
			continue
		}
		c.reply(s.id, map[string]any{"seq": resps[i].GetSeq(), "ts": resps[i].GetTs().AsTime().UnixMilli()}, nil)
	}
}

// maxPublishBatchBytes bounds the text of one PublishBatch, well under the room service's
// request limit (1 MiB by default).
const maxPublishBatchBytes = 256 << 10

// publishBatchLen is how many of the queued sends go in the next batch: at most
// MaxPublishBatch, and at most maxPublishBatchBytes of text unless a single send.
func publishBatchLen(queue []queuedSend) int {
	n, size := 0, 0
	for _, s := range queue {
		size += len(s.req.GetText()) + len(s.req.GetClientMsgId()) + len(s.req.GetRoom()) + 256
		if n == roomv1.MaxPublishBatch || (n > 0 && size > maxPublishBatchBytes) {
			break
		}
		n++
	}
	return n
}
