// Package edgeserver is the WebSocket edge: it speaks protocol v1 (and, when enabled, the seed
// tutorial's legacy protocol) to browsers, and turns frames into calls to the auth, room and
// presence services. Room events reach it by Redis pub/sub (see hub.go).
package edgeserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	authv1 "github.com/chatrt/chat/gen/chat/auth/v1"
	presencev1 "github.com/chatrt/chat/gen/chat/presence/v1"
	roomv1 "github.com/chatrt/chat/gen/chat/room/v1"
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/services/edge/wsbuf"
)

// Server is one edge.
type Server struct {
	cfg      Config
	log      *slog.Logger
	auth     authv1.AuthServiceClient
	room     roomv1.RoomServiceClient
	presence presencev1.PresenceServiceClient
	// calls batches the calls that many connections make at once (see batch.go).
	calls    calls
	rdb      redis.UniversalClient
	hub      *hub
	limits   *userLimits
	upgrader websocket.Upgrader
	origins  map[string]bool
	connSeq  atomic.Uint64
	// leased is set once a heartbeat has succeeded.
	leased atomic.Bool

	mu      sync.Mutex
	clients map[*client]struct{}
	// unreleased holds connections whose LeaveAll or Unbind failed, retried in the background.
	unreleased map[string]struct{}
	conns      sync.WaitGroup

	connections prometheus.Gauge
	registry    *prometheus.Registry

	// ctx is the edge's lifetime, set by Serve.
	ctx context.Context
	// linger tells idle socket writers and command goroutines when to end.
	linger *lingerClock
}

// Deps are the clients an edge uses.
type Deps struct {
	Auth     authv1.AuthServiceClient
	Room     roomv1.RoomServiceClient
	Presence presencev1.PresenceServiceClient
	Redis    redis.UniversalClient
}

// New builds an edge.
func New(cfg Config, log *slog.Logger, d Deps) *Server {
	s := &Server{
		cfg: cfg, log: log, auth: d.Auth, room: d.Room, presence: d.Presence, rdb: d.Redis,
		limits: newUserLimits(cfg.UserRate, cfg.UserBurst), origins: cfg.origins(),
		clients: map[*client]struct{}{}, unreleased: map[string]struct{}{},
		registry: prometheus.NewRegistry(), linger: newLingerClock(),
	}
	s.connections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "edge_connections", Help: "Open WebSocket connections."})
	s.registry.MustRegister(s.connections, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.calls = newCalls(s.batchCtx, s.registry, cfg.JoinMembers, d.Auth, d.Room, d.Presence)
	s.upgrader = websocket.Upgrader{
		// A small read buffer (frames larger than it are read in several steps), and write
		// buffers borrowed from the pool only while writing: an idle connection holds 1 KiB.
		ReadBufferSize:  1 << 10,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     s.checkOrigin,
	}
	return s
}

// Run dials the services and Redis, listens, and serves until ctx is done.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvBytes)),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
			// Reconnect within seconds when a service comes back (gRPC's default backoff
			// grows to two minutes).
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: 5 * time.Second,
			}),
		)
	}
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var deps Deps
	for _, t := range []struct {
		addr string
		set  func(*grpc.ClientConn)
	}{
		{cfg.AuthAddr, func(c *grpc.ClientConn) { deps.Auth = authv1.NewAuthServiceClient(c) }},
		{cfg.RoomAddr, func(c *grpc.ClientConn) { deps.Room = roomv1.NewRoomServiceClient(c) }},
		{cfg.PresenceAddr, func(c *grpc.ClientConn) { deps.Presence = presencev1.NewPresenceServiceClient(c) }},
	} {
		c, err := dial(t.addr)
		if err != nil {
			return fmt.Errorf("dial %s: %w", t.addr, err)
		}
		conns = append(conns, c)
		t.set(c)
	}
	rdb, err := platform.NewRedis(cfg.redisConfig())
	if err != nil {
		return err
	}
	defer rdb.Close()
	deps.Redis = rdb
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	return New(cfg, log, deps).Serve(ctx, lis)
}

// roomRecoverer adapts the room client to the hub.
type roomRecoverer struct{ c roomv1.RoomServiceClient }

func (r roomRecoverer) Recover(ctx context.Context, room, epoch string, after uint64) (*roomv1.RecoverResponse, error) {
	return r.c.Recover(ctx, &roomv1.RecoverRequest{Room: room, Epoch: epoch, AfterSeq: after})
}

// Serve serves browsers on lis until ctx is done, then stops: it stops accepting, closes every
// socket with 1001 "going away", takes every connection out of its rooms and presence, and
// releases its lease, within the shutdown timeout.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	s.ctx = runCtx
	s.hub = newHub(runCtx, s.log, s.rdb, s.cfg.RoomKeyPrefix, roomRecoverer{s.room}, s.cfg.CallTimeout)

	var wg sync.WaitGroup
	// The heartbeat stops first at shutdown: a renewal after ReleaseEdge would revive the lease.
	hbCtx, stopHeartbeat := context.WithCancel(runCtx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		s.heartbeatLoop(hbCtx)
	}()
	workers := []func(context.Context){s.hub.run, s.retryReleases, func(ctx context.Context) { s.linger.run(ctx, lingerPeriod) }}
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w(runCtx)
		}()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, false) })
	if s.cfg.Legacy {
		mux.HandleFunc("/ws/legacy", func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, true) })
	}
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	// Ready once the edge holds its presence lease: before that, logins cannot bind.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.leased.Load() {
			http.Error(w, "no presence lease yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/", webHandler())
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
		close(errc)
	}()
	s.log.Info("edge listening", "addr", lis.Addr().String(), "edge", s.cfg.EdgeID, "legacy", s.cfg.Legacy)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.shutdown(hs, func() {
		stopHeartbeat()
		<-hbDone
	})
	cancel()
	s.hub.close()
	wg.Wait()
	return err
}

// shutdown stops accepting, says goodbye to every socket, waits for their cleanup, and
// releases the lease (which also unbinds anything a cleanup could not).
func (s *Server) shutdown(hs *http.Server, stopHeartbeat func()) {
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	_ = hs.Shutdown(ctx) // hijacked sockets are not its business; they are closed below
	s.mu.Lock()
	for c := range s.clients {
		go c.sock.closeWith(websocket.CloseGoingAway, "server shutting down")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("sockets still open at the shutdown deadline")
	}
	stopHeartbeat()
	if _, err := s.presence.ReleaseEdge(ctx, &presencev1.ReleaseEdgeRequest{EdgeId: s.cfg.EdgeID}); err != nil {
		s.log.Warn("release edge lease failed; presence will sweep it", "err", err)
	}
}

// checkOrigin lets in requests without an Origin (not browsers), from the edge's own host, or
// from an origin on the allowlist, compared exactly (scheme, host and port).
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return s.origins[strings.ToLower(u.Scheme+"://"+u.Host)]
}

func (s *Server) nextConnID() string {
	return s.cfg.EdgeID + "-" + strconv.FormatUint(s.connSeq.Add(1), 10)
}

// serveWS upgrades a request and runs the connection until it ends.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request, legacy bool) {
	if s.ctx.Err() != nil {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	hj := &wsbuf.Hijacker{ResponseWriter: w}
	ws, err := s.upgrader.Upgrade(hj, r, nil)
	if err != nil {
		return // the upgrader answered the request
	}
	if err := hj.Conn.Flush(); err != nil { // the handshake answer
		ws.Close()
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	c := &client{
		srv: s, sock: newSocket(ws, hj.Conn, &s.cfg, s.linger), id: s.nextConnID(), remoteIP: host, legacy: legacy,
		rooms: map[string]bool{}, connLimit: rate.NewLimiter(rate.Limit(s.cfg.ConnRate), s.cfg.ConnBurst),
	}
	if !s.track(c) {
		c.sock.closeWith(websocket.CloseGoingAway, "server shutting down")
		c.sock.finish()
		return
	}
	c.sock.startPings()
	// The connection runs on its own goroutine, so the HTTP server's goroutine returns and
	// frees what it held for the request (its buffers, the request, a deep stack).
	go func() {
		defer s.conns.Done()
		c.run(s.ctx)
	}()
}

// track registers a connection; false when the edge is shutting down.
func (s *Server) track(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.clients[c] = struct{}{}
	s.conns.Add(1)
	s.connections.Inc()
	return true
}

func (s *Server) forget(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients, c)
	s.connections.Dec()
}

// releaseConn takes a closed connection out of every room and out of presence. Should either
// call fail, the connection is retried in the background until it succeeds (or the edge stops,
// when releasing the lease does the same).
func (s *Server) releaseConn(connID string) {
	if err := s.release(connID); err != nil {
		s.log.Warn("connection cleanup failed; will retry", "conn", connID, "err", err)
		s.mu.Lock()
		s.unreleased[connID] = struct{}{}
		s.mu.Unlock()
	}
}

func (s *Server) release(connID string) error {
	if _, err := s.calls.leaveAll.do(connID); err != nil {
		return fmt.Errorf("leave all: %w", err)
	}
	if _, err := s.calls.unbind.do(connID); err != nil {
		return fmt.Errorf("unbind: %w", err)
	}
	return nil
}

// batchCtx is the context of one batch call: the call timeout, and not cut short when the edge
// stops (a closing connection's cleanup must still go out).
func (s *Server) batchCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(s.ctx), s.cfg.CallTimeout)
}

// retryReleases retries failed connection cleanups every two seconds until ctx is done.
func (s *Server) retryReleases(ctx context.Context) {
	platform.Every(ctx, 2*time.Second, func() {
		s.mu.Lock()
		var ids []string
		for id := range s.unreleased {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		for _, id := range ids {
			if s.release(id) == nil {
				s.mu.Lock()
				delete(s.unreleased, id)
				s.mu.Unlock()
			}
		}
	})
}

// heartbeatLoop keeps the edge's presence lease. Should presence report a new lease while the
// edge has authenticated connections, the old lease lapsed and presence has unbound them: the
// edge closes them (1012), and their clients reconnect and recover.
func (s *Server) heartbeatLoop(ctx context.Context) {
	interval := s.cfg.HeartbeatInterval
	first := true
	for {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		resp, err := s.presence.Heartbeat(cctx, &presencev1.HeartbeatRequest{EdgeId: s.cfg.EdgeID})
		cancel()
		switch {
		case err != nil:
			if ctx.Err() == nil {
				s.log.Warn("presence heartbeat failed", "err", err)
			}
		case resp.GetLeaseCreated() && !first:
			s.log.Warn("presence lease had lapsed; closing this edge's connections so they reconnect")
			s.closeAll()
		}
		if err == nil {
			first = false
			s.leased.Store(true)
			if ms := resp.GetIntervalMs(); ms > 0 && time.Duration(ms)*time.Millisecond < interval {
				interval = time.Duration(ms) * time.Millisecond
			}
		}
		wait := interval
		if err != nil {
			wait = min(interval, time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		go c.sock.closeWith(websocket.CloseServiceRestart, "presence lease lost; reconnect")
	}
}
