package wsbuf

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns a Conn over a real loopback TCP connection and the peer's end.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return &Conn{Conn: c}, peer
}

func TestFlushWritesBufferedBytes(t *testing.T) {
	c, peer := pair(t)
	if err := c.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"one ", "two ", "three"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("one two three"))
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "one two three" {
		t.Fatalf("peer got %q", got)
	}
}

func TestWriteDeadlineAppliesWhenBytesGoOut(t *testing.T) {
	c, _ := pair(t)
	// A deadline already past fails the flush, though it was set before the bytes were
	// buffered.
	if err := c.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("flush past the deadline: %v, want a deadline error", err)
	}
}

func TestLastWriteDeadlineWins(t *testing.T) {
	c, peer := pair(t)
	if err := c.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil { // nothing buffered: nothing written, no error
		t.Fatal(err)
	}
	if err := c.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("on time")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush within the latest deadline: %v", err)
	}
	got := make([]byte, len("on time"))
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
}

func TestBlockedWriteTimesOut(t *testing.T) {
	c, _ := pair(t) // the peer never reads
	if err := c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, bufSize)
	var err error
	for i := 0; i < 10_000 && err == nil; i++ {
		if _, err = c.Write(chunk); err == nil {
			err = c.Flush()
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing to a peer that never reads: %v, want a deadline error", err)
	}
}
