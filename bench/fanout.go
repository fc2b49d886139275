package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// fanoutParams describe a fan-out run.
type fanoutParams struct {
	Subs, Pubs, Msgs int // subscribers, publishers, messages per publisher
	Window           int // closed loop: messages a publisher may have not yet delivered everywhere
	Rate             int // open loop: messages per second in total (Window is then ignored)
	Size             int // text bytes
}

// fanoutResult is what a fan-out run measured.
type fanoutResult struct {
	Delivered       int64   `json:"delivered"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	P50ms           float64 `json:"p50_ms"`
	P90ms           float64 `json:"p90_ms"`
	P99ms           float64 `json:"p99_ms"`
	MaxMs           float64 `json:"max_ms"`
	Lost            int64   `json:"lost"`
	Dup             int64   `json:"duplicated"`
	OutOfOrder      int64   `json:"out_of_order"`
	LoadgenCPU      float64 `json:"loadgen_cpu"`
	Seconds         float64 `json:"seconds"`
}

// subscriber tracks what one connection received, per publisher.
type subscriber struct {
	seen      [][]uint64 // bitmaps: publisher -> seq bits
	maxSeen   []int
	hist      *hdrhistogram.Histogram
	dup, ooo  int64
	delivered int64
}

// The text of a message: "p<publisher>:<seq>:<send unix nanos>:" and padding.
func messageText(pub, seq int, size int) string {
	s := fmt.Sprintf("p%d:%d:%d:", pub, seq, time.Now().UnixNano())
	if len(s) < size {
		s += strings.Repeat("x", size-len(s))
	}
	return s
}

var textKey = []byte(`"text":"p`)

// parse finds publisher, seq and send time in a message frame, cheaply.
func parse(frame []byte) (pub, seq int, sent int64, ok bool) {
	i := bytes.Index(frame, textKey)
	if i < 0 {
		return 0, 0, 0, false
	}
	rest := frame[i+len(textKey):]
	parts := bytes.SplitN(rest, []byte(":"), 4)
	if len(parts) < 4 {
		return 0, 0, 0, false
	}
	p, e1 := strconv.Atoi(string(parts[0]))
	s, e2 := strconv.Atoi(string(parts[1]))
	n, e3 := strconv.ParseInt(string(parts[2]), 10, 64)
	return p, s, n, e1 == nil && e2 == nil && e3 == nil
}

func runFanout(t *target, p fanoutParams, tokens []string) (fanoutResult, error) {
	room := "bench-fanout"
	subs, _, err := openConns(t, p.Subs, 50, tokens, room)
	if err != nil {
		closeAll(subs)
		return fanoutResult{}, fmt.Errorf("open subscribers: %w", err)
	}
	defer closeAll(subs)
	pubs, _, err := openConns(t, p.Pubs, 10, tokens, room)
	if err != nil {
		closeAll(pubs)
		return fanoutResult{}, fmt.Errorf("open publishers: %w", err)
	}
	defer closeAll(pubs)

	// deliveries[pub][seq] counts subscribers that got the message; the last one frees a
	// window slot of its publisher.
	deliveries := make([][]atomic.Int32, p.Pubs)
	window := make([]chan struct{}, p.Pubs)
	for i := range deliveries {
		deliveries[i] = make([]atomic.Int32, p.Msgs+1)
		window[i] = make(chan struct{}, max(p.Window, 1))
	}
	var total atomic.Int64
	want := int64(p.Subs) * int64(p.Pubs) * int64(p.Msgs)
	allDone := make(chan struct{})
	var lastDelivery atomic.Int64

	states := make([]*subscriber, p.Subs)
	var wg sync.WaitGroup
	for i, c := range subs {
		st := &subscriber{seen: make([][]uint64, p.Pubs), maxSeen: make([]int, p.Pubs), hist: hdrhistogram.New(1, 60_000_000, 3)}
		for j := range st.seen {
			st.seen[j] = make([]uint64, p.Msgs/64+1)
		}
		states[i] = st
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, frame, err := c.ws.ReadMessage()
				if err != nil {
					return
				}
				pub, seq, sent, ok := parse(frame)
				if !ok || pub >= p.Pubs || seq < 1 || seq > p.Msgs {
					continue
				}
				now := time.Now().UnixNano()
				st.hist.RecordValue(max((now-sent)/1000, 1))
				word, bit := seq/64, uint64(1)<<(seq%64)
				if st.seen[pub][word]&bit != 0 {
					st.dup++
					continue
				}
				st.seen[pub][word] |= bit
				if seq < st.maxSeen[pub] {
					st.ooo++
				}
				st.maxSeen[pub] = max(st.maxSeen[pub], seq)
				st.delivered++
				lastDelivery.Store(now)
				if deliveries[pub][seq].Add(1) == int32(p.Subs) && p.Rate == 0 {
					<-window[pub]
				}
				if total.Add(1) == want {
					close(allDone)
				}
			}
		}()
	}
	// Publishers' own frames are read and dropped, so they are never slow consumers.
	for _, c := range pubs {
		go func() {
			for {
				if _, _, err := c.ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}

	cpu0 := loadgenCPU()
	start := time.Now()
	var pwg sync.WaitGroup
	for pi, c := range pubs {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			var tick *time.Ticker
			if p.Rate > 0 {
				// Publisher pi sends at pi/Rate + k*Pubs/Rate seconds, so that together they
				// send one message every 1/Rate seconds, not Pubs messages at once.
				time.Sleep(time.Duration(float64(time.Second) * float64(pi) / float64(p.Rate)))
				tick = time.NewTicker(time.Duration(float64(time.Second) * float64(p.Pubs) / float64(p.Rate)))
				defer tick.Stop()
			}
			for seq := 1; seq <= p.Msgs; seq++ {
				if tick != nil {
					<-tick.C
				} else {
					window[pi] <- struct{}{}
				}
				if err := c.send(room, messageText(pi, seq, p.Size)); err != nil {
					return
				}
			}
		}()
	}
	pwg.Wait()
	select {
	case <-allDone:
	case <-time.After(15 * time.Second):
	}
	elapsed := time.Duration(lastDelivery.Load() - start.UnixNano())
	cpu := loadgenCPU() - cpu0
	closeAll(subs)
	wg.Wait()

	h := hdrhistogram.New(1, 60_000_000, 3)
	var r fanoutResult
	for _, st := range states {
		h.Merge(st.hist)
		r.Dup += st.dup
		r.OutOfOrder += st.ooo
		r.Delivered += st.delivered
	}
	r.Lost = want - r.Delivered
	if elapsed <= 0 {
		elapsed = time.Since(start)
	}
	r.Seconds = elapsed.Seconds()
	r.DeliveredPerSec = float64(r.Delivered) / r.Seconds
	r.P50ms = float64(h.ValueAtQuantile(50)) / 1000
	r.P90ms = float64(h.ValueAtQuantile(90)) / 1000
	r.P99ms = float64(h.ValueAtQuantile(99)) / 1000
	r.MaxMs = float64(h.Max()) / 1000
	r.LoadgenCPU = cpu / time.Since(start).Seconds()
	return r, nil
}
