package authserver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	authv1 "github.com/chatrt/chat/gen/chat/auth/v1"
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/platform/redistest"
	"github.com/chatrt/chat/platform/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(redistest.DialRetrier))
}

// harness is one auth service on loopback TCP, on a key prefix of its own.
type harness struct {
	client      authv1.AuthServiceClient
	conn        *grpc.ClientConn
	rdb         *redis.Client
	prefix      string
	metricsAddr string
	svc         *Service
}

func testConfig(prefix string) Config {
	return Config{
		Config:          servertest.Config(prefix),
		TokenTTL:        time.Hour,
		HashConcurrency: 2,
		HashWait:        5 * time.Second,
		MaxUserFailures: 10,
		MaxAddrFailures: 100,
		FailureWindow:   time.Minute,
	}
}

// start serves the auth service with cfg (its Redis prefix filled in) and stops it when the
// test ends.
func start(t testing.TB, edit func(*Config)) *harness {
	t.Helper()
	probe := redistest.Client(t)
	prefix := redistest.Prefix(t, probe)
	cfg := testConfig(prefix)
	if edit != nil {
		edit(&cfg)
	}
	rdb := servertest.Redis(t, cfg.Redis)
	svc, err := NewService(servertest.Logger(), cfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Serve(t, cfg.Config, rdb, func(s *platform.Server) { s.Register(&authv1.AuthService_ServiceDesc, svc) })
	return &harness{
		client: authv1.NewAuthServiceClient(srv.Conn), conn: srv.Conn, rdb: probe, prefix: prefix,
		metricsAddr: srv.MetricsAddr, svc: svc,
	}
}

func callCtx(t testing.TB) context.Context { return servertest.Ctx(t) }

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	servertest.WantCode(t, err, want)
}

func (h *harness) register(t testing.TB, name, password string) *authv1.RegisterResponse {
	t.Helper()
	resp, err := h.client.Register(callCtx(t), &authv1.RegisterRequest{Username: name, Password: password})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return resp
}

func (h *harness) login(t *testing.T, name, password string) *authv1.LoginResponse {
	t.Helper()
	resp, err := h.client.Login(callCtx(t), &authv1.LoginRequest{Username: name, Password: password})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return resp
}

func TestRegisterLoginVerifyLogout(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	reg := h.register(t, "Alice_1", "correct horse")
	if reg.GetUsername() != "Alice_1" || reg.GetUserId() == "" {
		t.Fatalf("register answered %+v", reg)
	}

	// Usernames are case-insensitive for login; the registered case is kept.
	before := time.Now()
	login := h.login(t, "alice_1", "correct horse")
	if login.GetUserId() != reg.GetUserId() || login.GetUsername() != "Alice_1" {
		t.Fatalf("login answered user %q %q, want %q Alice_1", login.GetUserId(), login.GetUsername(), reg.GetUserId())
	}
	if len(login.GetToken()) != 43 {
		t.Fatalf("token has %d characters, want 43 (256 bits base64url)", len(login.GetToken()))
	}
	exp := login.GetExpiresAt().AsTime()
	if exp.Before(before.Add(time.Hour-time.Second)) || exp.After(time.Now().Add(time.Hour)) {
		t.Fatalf("expires_at %v is not one TTL (1h) after login", exp)
	}

	v, err := h.client.VerifyToken(callCtx(t), &authv1.VerifyTokenRequest{Token: login.GetToken()})
	if err != nil {
		t.Fatal(err)
	}
	if v.GetUserId() != reg.GetUserId() || v.GetUsername() != "Alice_1" || !v.GetExpiresAt().AsTime().Equal(exp.Truncate(time.Millisecond)) {
		t.Fatalf("verify answered %+v", v)
	}

	// Two logins make two independent tokens.
	second := h.login(t, "ALICE_1", "correct horse")
	if second.GetToken() == login.GetToken() {
		t.Fatal("two logins returned the same token")
	}

	out, err := h.client.Logout(callCtx(t), &authv1.LogoutRequest{Token: login.GetToken()})
	if err != nil || !out.GetRevoked() {
		t.Fatalf("logout: %v %v, want revoked", out, err)
	}
	_, err = h.client.VerifyToken(callCtx(t), &authv1.VerifyTokenRequest{Token: login.GetToken()})
	wantCode(t, err, codes.Unauthenticated)
	out, err = h.client.Logout(callCtx(t), &authv1.LogoutRequest{Token: login.GetToken()})
	if err != nil || out.GetRevoked() {
		t.Fatalf("second logout: %v %v, want success without revocation", out, err)
	}
	if _, err := h.client.VerifyToken(callCtx(t), &authv1.VerifyTokenRequest{Token: second.GetToken()}); err != nil {
		t.Fatalf("the other token stopped working after logout: %v", err)
	}
}

func TestRegisterRejects(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.register(t, "bob", "password1")
	tests := []struct {
		name, username, password string
		want                     codes.Code
		msg                      string
	}{
		{"taken", "bob", "password2", codes.AlreadyExists, "taken"},
		{"taken other case", "BoB", "password2", codes.AlreadyExists, "taken"},
		{"short username", "bo", "password1", codes.InvalidArgument, "username"},
		{"long username", strings.Repeat("b", 33), "password1", codes.InvalidArgument, "username"},
		{"space in username", "bo b", "password1", codes.InvalidArgument, "username"},
		{"non-ascii username", "bøb", "password1", codes.InvalidArgument, "username"},
		{"brace in username", "b{o}b", "password1", codes.InvalidArgument, "username"},
		{"short password", "carol", "1234567", codes.InvalidArgument, "password"},
		{"long password", "carol", strings.Repeat("p", 257), codes.InvalidArgument, "password"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.Register(callCtx(t), &authv1.RegisterRequest{Username: tc.username, Password: tc.password})
			wantCode(t, err, tc.want)
			if !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), tc.msg)
			}
		})
	}
	// Limits are inclusive.
	h.register(t, "abc", strings.Repeat("p", 8))
	h.register(t, strings.Repeat("z", 32), strings.Repeat("p", 256))
}

func TestConcurrentRegisterOfOneNameCreatesOneUser(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	var wg sync.WaitGroup
	results := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "dave"
			if i%2 == 1 {
				name = "DAVE"
			}
			_, err := h.client.Register(callCtx(t), &authv1.RegisterRequest{Username: name, Password: "password1"})
			results <- err
		}()
	}
	wg.Wait()
	close(results)
	created := 0
	for err := range results {
		switch status.Code(err) {
		case codes.OK:
			created++
		case codes.AlreadyExists:
		default:
			t.Fatalf("register: %v", err)
		}
	}
	if created != 1 {
		t.Fatalf("%d registrations of one name succeeded, want 1", created)
	}
}

func TestLoginFailuresLookAlike(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.register(t, "erin", "password1")
	_, wrong := h.client.Login(callCtx(t), &authv1.LoginRequest{Username: "erin", Password: "password2"})
	_, unknown := h.client.Login(callCtx(t), &authv1.LoginRequest{Username: "nobody", Password: "password2"})
	wantCode(t, wrong, codes.Unauthenticated)
	wantCode(t, unknown, codes.Unauthenticated)
	if status.Convert(wrong).Message() != status.Convert(unknown).Message() {
		t.Fatalf("wrong password says %q but unknown user says %q", status.Convert(wrong).Message(), status.Convert(unknown).Message())
	}
	_, err := h.client.Login(callCtx(t), &authv1.LoginRequest{Username: "x", Password: "password2"})
	wantCode(t, err, codes.InvalidArgument)
}

func TestPasswordStoredAsArgon2idAndTokenOnlyAsHash(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.register(t, "frank", "secret password")
	login := h.login(t, "frank", "secret password")
	ctx := callCtx(t)
	keys := redistest.Keys(t, ctx, h.rdb, h.prefix)
	var sawUser, sawToken bool
	for _, k := range keys {
		if strings.Contains(k, login.GetToken()) {
			t.Fatalf("key %q contains the token", k)
		}
		typ := h.rdb.Type(ctx, k).Val()
		if typ != "hash" {
			continue
		}
		vals := h.rdb.HGetAll(ctx, k).Val()
		for f, v := range vals {
			if strings.Contains(v, login.GetToken()) || strings.Contains(v, "secret password") {
				t.Fatalf("field %s of %s holds a secret in clear", f, k)
			}
		}
		if phc, ok := vals["phc"]; ok {
			sawUser = true
			if !strings.HasPrefix(phc, "$argon2id$v=19$m=19456,t=2,p=1$") {
				t.Fatalf("stored hash %q is not argon2id m=19456 t=2 p=1", phc)
			}
		}
		if _, ok := vals["exp_ms"]; ok {
			sawToken = true
			if ttl := h.rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > time.Hour {
				t.Fatalf("token key TTL %v, want within (0, 1h]", ttl)
			}
		}
	}
	if !sawUser || !sawToken {
		t.Fatalf("keys %v: user record %v, token record %v", keys, sawUser, sawToken)
	}
	// Every key is under the service prefix.
	all := redistest.Keys(t, ctx, h.rdb, h.prefix)
	if len(all) != len(keys) || len(all) < 2 {
		t.Fatalf("keys under prefix: %v", all)
	}
}

func TestTokenExpires(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.TokenTTL = 300 * time.Millisecond })
	h.register(t, "grace", "password1")
	login := h.login(t, "grace", "password1")
	if _, err := h.client.VerifyToken(callCtx(t), &authv1.VerifyTokenRequest{Token: login.GetToken()}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	_, err := h.client.VerifyToken(callCtx(t), &authv1.VerifyTokenRequest{Token: login.GetToken()})
	wantCode(t, err, codes.Unauthenticated)
}

func TestVerifyAndLogoutReject(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	_, err := h.client.VerifyToken(callCtx(t), &authv1.VerifyTokenRequest{Token: "no-such-token"})
	wantCode(t, err, codes.Unauthenticated)
	_, err = h.client.VerifyToken(callCtx(t), &authv1.VerifyTokenRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.client.VerifyToken(callCtx(t), &authv1.VerifyTokenRequest{Token: strings.Repeat("t", 257)})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.client.Logout(callCtx(t), &authv1.LogoutRequest{})
	wantCode(t, err, codes.InvalidArgument)
}

func withAddr(ctx context.Context, addr string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ClientAddrHeader, addr)
}

func TestLoginThrottledPerUsername(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) {
		c.MaxUserFailures = 3
		c.FailureWindow = 1500 * time.Millisecond
	})
	h.register(t, "heidi", "password1")
	h.register(t, "ivan", "password1")
	for i := range 3 {
		// From different addresses, so only the username counter can trip.
		ctx := withAddr(callCtx(t), "192.0.2."+string(rune('1'+i)))
		_, err := h.client.Login(ctx, &authv1.LoginRequest{Username: "heidi", Password: "wrong pass"})
		wantCode(t, err, codes.Unauthenticated)
	}
	// Even the right password is refused during the cool-down.
	_, err := h.client.Login(withAddr(callCtx(t), "192.0.2.9"), &authv1.LoginRequest{Username: "HEIDI", Password: "password1"})
	wantCode(t, err, codes.ResourceExhausted)
	// Another user is not affected.
	h.login(t, "ivan", "password1")

	time.Sleep(1600 * time.Millisecond)
	h.login(t, "heidi", "password1")
}

func TestLoginThrottledPerClientAddress(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.MaxAddrFailures = 3 })
	h.register(t, "judy", "password1")
	for _, name := range []string{"nobody1", "nobody2", "nobody3"} {
		_, err := h.client.Login(withAddr(callCtx(t), "203.0.113.7"), &authv1.LoginRequest{Username: name, Password: "wrong pass"})
		wantCode(t, err, codes.Unauthenticated)
	}
	_, err := h.client.Login(withAddr(callCtx(t), "203.0.113.7"), &authv1.LoginRequest{Username: "judy", Password: "password1"})
	wantCode(t, err, codes.ResourceExhausted)
	// Another address logs in fine; so does IPv4-mapped IPv6 of another host.
	if _, err := h.client.Login(withAddr(callCtx(t), "203.0.113.8"), &authv1.LoginRequest{Username: "judy", Password: "password1"}); err != nil {
		t.Fatal(err)
	}
	// The mapped form of the throttled address is the same address.
	_, err = h.client.Login(withAddr(callCtx(t), "::ffff:203.0.113.7"), &authv1.LoginRequest{Username: "judy", Password: "password1"})
	wantCode(t, err, codes.ResourceExhausted)
}

func TestSuccessfulLoginClearsUsernameFailures(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) { c.MaxUserFailures = 3 })
	h.register(t, "karl", "password1")
	for range 2 {
		_, err := h.client.Login(callCtx(t), &authv1.LoginRequest{Username: "karl", Password: "wrong pass"})
		wantCode(t, err, codes.Unauthenticated)
	}
	h.login(t, "karl", "password1")
	for range 2 {
		_, err := h.client.Login(callCtx(t), &authv1.LoginRequest{Username: "karl", Password: "wrong pass"})
		wantCode(t, err, codes.Unauthenticated)
	}
	h.login(t, "karl", "password1")
}

func TestHashingSaturationIsResourceExhausted(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *Config) {
		c.HashConcurrency = 1
		c.HashWait = 50 * time.Millisecond
	})
	h.register(t, "liam", "password1")
	// Occupy the only hashing slot, as a long-running hash would.
	if err := h.svc.hasher.slots.Acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.Login(callCtx(t), &authv1.LoginRequest{Username: "liam", Password: "password1"})
	wantCode(t, err, codes.ResourceExhausted)
	_, err = h.client.Register(callCtx(t), &authv1.RegisterRequest{Username: "mia", Password: "password1"})
	wantCode(t, err, codes.ResourceExhausted)
	h.svc.hasher.slots.Release(1)
	h.login(t, "liam", "password1")
}

func TestRedisDownIsUnavailableAndNotServing(t *testing.T) {
	t.Parallel()
	dead := servertest.DeadAddr(t)
	h := start(t, func(c *Config) { c.Redis.Addrs = dead; c.Redis.Timeout = 200 * time.Millisecond })

	calls := map[string]func(ctx context.Context) error{
		"Register": func(ctx context.Context) error {
			_, err := h.client.Register(ctx, &authv1.RegisterRequest{Username: "nina", Password: "password1"})
			return err
		},
		"Login": func(ctx context.Context) error {
			_, err := h.client.Login(ctx, &authv1.LoginRequest{Username: "nina", Password: "password1"})
			return err
		},
		"VerifyToken": func(ctx context.Context) error {
			_, err := h.client.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: "abc"})
			return err
		},
		"Logout": func(ctx context.Context) error {
			_, err := h.client.Logout(ctx, &authv1.LogoutRequest{Token: "abc"})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			wantCode(t, call(callCtx(t)), codes.Unavailable)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v: a dead Redis must not hang callers", d)
			}
		})
	}
	hc := healthpb.NewHealthClient(h.conn)
	resp, err := hc.Check(callCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health %v with Redis down, want NOT_SERVING", resp.GetStatus())
	}
}

func TestHealthReflectionAndMetrics(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	hc := healthpb.NewHealthClient(h.conn)
	deadline := time.Now().Add(5 * time.Second)
	for _, svc := range []string{"", "chat.auth.v1.AuthService"} {
		for {
			resp, err := hc.Check(callCtx(t), &healthpb.HealthCheckRequest{Service: svc})
			if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("health of %q: %v %v, want SERVING", svc, resp, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	rc := reflectionpb.NewServerReflectionClient(h.conn)
	stream, err := rc.ServerReflectionInfo(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	var names []string
	for _, s := range got.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	joined := strings.Join(names, ",")
	for _, want := range []string{"chat.auth.v1.AuthService", "grpc.health.v1.Health"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("reflection lists %v, missing %s", names, want)
		}
	}

	h.register(t, "oscar", "password1")
	resp, err := http.Get("http://" + h.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `grpc_server_handled_total{grpc_code="OK",grpc_method="Register",grpc_service="chat.auth.v1.AuthService",grpc_type="unary"} 1`) {
		t.Fatalf("metrics do not count the Register call:\n%.2000s", body)
	}
}

func TestConfigFromArgsAndEnv(t *testing.T) {
	t.Setenv("AUTH_TOKEN_TTL", "2h")
	t.Setenv("AUTH_GRPC_ADDR", ":7000")
	cfg, err := ConfigFromArgs([]string{"-grpc-addr", ":7001", "-redis-addrs", "a:1,b:2"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TokenTTL != 2*time.Hour || cfg.GRPCAddr != ":7001" || cfg.Redis.Addrs != "a:1,b:2" || cfg.Redis.KeyPrefix != "auth:" {
		t.Fatalf("config %+v", cfg)
	}
	if _, err := ConfigFromArgs([]string{"-no-such-flag"}); err == nil {
		t.Fatal("unknown flag accepted")
	}
	if _, err := ConfigFromArgs([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
}

// BenchmarkLoginFailure compares a wrong password with an unknown user: their ns/op should be
// alike, since an unknown user is checked against a dummy hash.
func BenchmarkLoginFailure(b *testing.B) {
	h := start(b, func(c *Config) { c.MaxUserFailures, c.MaxAddrFailures = 1<<30, 1<<30 })
	h.register(b, "bench", "password1")
	for _, tc := range []struct{ name, user string }{{"wrong_password", "bench"}, {"unknown_user", "nobody"}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := callCtx(b)
			for b.Loop() {
				_, err := h.client.Login(ctx, &authv1.LoginRequest{Username: tc.user, Password: "password2"})
				if status.Code(err) != codes.Unauthenticated {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestVerifyTokenBatch: each token of a batch is answered as VerifyToken would answer it, and a
// bad one fails alone.
func TestVerifyTokenBatch(t *testing.T) {
	t.Parallel()
	h := start(t, nil)
	h.register(t, "ann", "password1")
	h.register(t, "ben", "password1")
	ann, ben := h.login(t, "ann", "password1"), h.login(t, "ben", "password1")
	resp, err := h.client.VerifyTokenBatch(callCtx(t), &authv1.VerifyTokenBatchRequest{Tokens: []string{
		ann.GetToken(), "no-such-token", "", ben.GetToken(), ann.GetToken(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.GetResults() {
		got = append(got, fmt.Sprintf("%s %s", codes.Code(r.GetCode()), r.GetResponse().GetUsername()))
	}
	if want := "OK ann|Unauthenticated |InvalidArgument |OK ben|OK ann"; strings.Join(got, "|") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, "|"), want)
	}
	_, err = h.client.VerifyTokenBatch(callCtx(t), &authv1.VerifyTokenBatchRequest{})
	wantCode(t, err, codes.InvalidArgument)
}
