package edgeserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
	"github.com/prometheus/client_golang/prometheus"
)

func testBatchCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// TestBatcherGathersWaitingCalls: while maxInFlight batches are out, calls wait and then go
// out together (at most maxBatch at a time), each caller getting its own answer.
func TestBatcherGathersWaitingCalls(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	b := newBatcher(testBatchCtx, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sizes"}), func(_ context.Context, reqs []int) ([]string, []error) {
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		<-release
		out, errs := make([]string, len(reqs)), make([]error, len(reqs))
		for i, r := range reqs {
			if r%7 == 0 {
				errs[i] = fmt.Errorf("no %d", r)
				continue
			}
			out[i] = fmt.Sprint("answer ", r)
		}
		return out, errs
	})
	const n = maxInFlight + 600
	var wg sync.WaitGroup
	failures := make(chan string, n)
	call := func(i int) {
		defer wg.Done()
		got, err := b.do(i)
		switch {
		case i%7 == 0 && (err == nil || err.Error() != fmt.Sprintf("no %d", i)):
			failures <- fmt.Sprintf("call %d: err %v", i, err)
		case i%7 != 0 && (err != nil || got != fmt.Sprint("answer ", i)):
			failures <- fmt.Sprintf("call %d: %q %v", i, got, err)
		}
	}
	// The first maxInFlight calls, one after the other, go out alone.
	for i := range maxInFlight {
		wg.Add(1)
		go call(i)
		waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(sizes) == i+1 })
	}
	for i := maxInFlight; i < n; i++ {
		wg.Add(1)
		go call(i)
	}
	waitUntil(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.queue) == n-maxInFlight })
	close(release)
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	total := 0
	for i, s := range sizes {
		if s > maxBatch || (i < maxInFlight && s != 1) {
			t.Fatalf("batch sizes %v", sizes)
		}
		total += s
	}
	// 600 waiting calls fit in three batches of at most 256.
	if total != n || len(sizes) != maxInFlight+3 {
		t.Fatalf("batch sizes %v (total %d), want %d singles then 3 batches", sizes, total, maxInFlight)
	}
	// Every runner ends once the queue is empty.
	waitUntil(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.inFlight == 0 && len(b.queue) == 0 })
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSplitResults: item statuses become errors, a failed call fails every item, and a reply
// of the wrong length fails every item rather than mixing answers up.
func TestSplitResults(t *testing.T) {
	ok := &roomv1.JoinResult{Response: &roomv1.JoinResponse{MemberCount: 3}}
	bad := &roomv1.JoinResult{Code: uint32(codes.FailedPrecondition), Message: "taken"}
	resps, errs := splitResults(2, []*roomv1.JoinResult{ok, bad}, nil)
	if resps[0].GetMemberCount() != 3 || errs[0] != nil || resps[1] != nil || status.Code(errs[1]) != codes.FailedPrecondition || status.Convert(errs[1]).Message() != "taken" {
		t.Fatalf("got %v %v", resps, errs)
	}
	down := status.Error(codes.Unavailable, "down")
	_, errs = splitResults(2, []*roomv1.JoinResult(nil), down)
	if !errors.Is(errs[0], down) || !errors.Is(errs[1], down) {
		t.Fatalf("call failure: %v", errs)
	}
	_, errs = splitResults(3, []*roomv1.JoinResult{ok, ok}, nil)
	for _, err := range errs {
		if status.Code(err) != codes.Internal {
			t.Fatalf("short reply: %v", errs)
		}
	}
}

// TestPublishBatchLen: a batch of sends stops at MaxPublishBatch sends or at its byte bound,
// and always takes at least one.
func TestPublishBatchLen(t *testing.T) {
	send := func(chars int) queuedSend {
		return queuedSend{req: &roomv1.PublishRequest{Room: "r", Text: strings.Repeat("長", chars)}}
	}
	var small, big []queuedSend
	for range 300 {
		small = append(small, send(1))
		big = append(big, send(4000)) // 12,000 bytes each
	}
	for _, tc := range []struct {
		queue []queuedSend
		want  int
	}{
		{nil, 0}, {small[:1], 1}, {small, roomv1.MaxPublishBatch}, {big, maxPublishBatchBytes / (12000 + 257)},
		{[]queuedSend{send(100000)}, 1},
	} {
		if got := publishBatchLen(tc.queue); got != tc.want {
			t.Errorf("%d sends: batch of %d, want %d", len(tc.queue), got, tc.want)
		}
	}
}
