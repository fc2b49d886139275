// Package authserver is the auth service: registration, password login, bearer tokens and
// login throttling, stored in Redis under the service's own key prefix.
package authserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/chatrt/chat/gen/chat/auth/v1"
	"github.com/chatrt/chat/platform"
)

// ClientAddrHeader is the request metadata key in which the edge passes the address of the
// browser it calls for. It is trusted: only edges and backends reach the auth service. Without
// it, the caller's own address is used.
const ClientAddrHeader = "x-chat-client-addr"

// errBadCredentials is the one answer to an unknown user and to a wrong password.
var errBadCredentials = status.Error(codes.Unauthenticated, "invalid username or password")

// Service implements chat.auth.v1.AuthService.
type Service struct {
	authv1.UnimplementedAuthServiceServer

	log    *slog.Logger
	cfg    Config
	store  *store
	hasher *hasher
	now    func() time.Time
}

var _ authv1.AuthServiceServer = (*Service)(nil)

// NewService builds the auth service on rdb, using the key prefix of cfg.Redis.
func NewService(log *slog.Logger, cfg Config, rdb redis.UniversalClient) (*Service, error) {
	h, err := newHasher(cfg.HashConcurrency, cfg.HashWait)
	if err != nil {
		return nil, err
	}
	return &Service{
		log:    log,
		cfg:    cfg,
		store:  &store{rdb: rdb, keys: keys{prefix: cfg.Redis.KeyPrefix}},
		hasher: h,
		now:    time.Now,
	}, nil
}

// Register creates a user.
func (s *Service) Register(ctx context.Context, req *authv1.RegisterRequest) (*authv1.RegisterResponse, error) {
	// A cheap look first, so taken names cost no hashing; the create below is still atomic.
	taken, err := s.store.userExists(ctx, req.GetUsername())
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "register")
	}
	if taken {
		return nil, status.Error(codes.AlreadyExists, "username is taken")
	}
	phc, err := s.hasher.hash(ctx, req.GetPassword())
	if err != nil {
		return nil, hashStatus(ctx, err)
	}
	u := userRecord{ID: uuid.NewString(), Username: req.GetUsername(), PHC: phc}
	created, err := s.store.createUser(ctx, u, s.now())
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "register")
	}
	if !created {
		return nil, status.Error(codes.AlreadyExists, "username is taken")
	}
	return &authv1.RegisterResponse{UserId: u.ID, Username: u.Username}, nil
}

// Login checks a password and issues a token.
func (s *Service) Login(ctx context.Context, req *authv1.LoginRequest) (*authv1.LoginResponse, error) {
	addr := clientAddr(ctx)
	userFails, addrFails, err := s.store.failures(ctx, req.GetUsername(), addr)
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "login")
	}
	if userFails >= int64(s.cfg.MaxUserFailures) || addrFails >= int64(s.cfg.MaxAddrFailures) {
		return nil, status.Errorf(codes.ResourceExhausted,
			"too many failed logins; try again later (cool-down up to %s)", s.cfg.FailureWindow)
	}

	u, err := s.store.user(ctx, req.GetUsername())
	if err != nil && !errors.Is(err, errNotFound) {
		return nil, platform.RedisStatus(ctx, err, "login")
	}
	// An unknown user is checked against a dummy hash: same work, same answer.
	ok, err := s.hasher.check(ctx, req.GetPassword(), u.PHC)
	if err != nil {
		return nil, hashStatus(ctx, err)
	}
	if !ok {
		if err := s.store.countFailure(ctx, req.GetUsername(), addr, s.cfg.FailureWindow); err != nil {
			return nil, platform.RedisStatus(ctx, err, "login")
		}
		return nil, errBadCredentials
	}
	if userFails > 0 {
		if err := s.store.clearUserFailures(ctx, req.GetUsername()); err != nil {
			return nil, platform.RedisStatus(ctx, err, "login")
		}
	}

	token, tokenHash, err := newToken()
	if err != nil {
		return nil, status.Error(codes.Internal, "could not create a token")
	}
	rec := tokenRecord{UserID: u.ID, Username: u.Username, ExpiresAt: s.now().Add(s.cfg.TokenTTL)}
	if err := s.store.saveToken(ctx, tokenHash, rec, s.cfg.TokenTTL); err != nil {
		return nil, platform.RedisStatus(ctx, err, "login")
	}
	return &authv1.LoginResponse{
		Token:     token,
		UserId:    u.ID,
		Username:  u.Username,
		ExpiresAt: timestamppb.New(rec.ExpiresAt),
	}, nil
}

// VerifyToken resolves a token to its user.
func (s *Service) VerifyToken(ctx context.Context, req *authv1.VerifyTokenRequest) (*authv1.VerifyTokenResponse, error) {
	resps, errs := s.verifyTokens(ctx, []string{req.GetToken()})
	return resps[0], errs[0]
}

// VerifyTokenBatch checks several tokens in one Redis round trip.
func (s *Service) VerifyTokenBatch(ctx context.Context, req *authv1.VerifyTokenBatchRequest) (*authv1.VerifyTokenBatchResponse, error) {
	resps, errs := s.verifyTokens(ctx, req.GetTokens())
	return &authv1.VerifyTokenBatchResponse{Results: platform.BatchResults(resps, errs, func(code uint32, msg string, r *authv1.VerifyTokenResponse) *authv1.VerifyTokenResult {
		return &authv1.VerifyTokenResult{Code: code, Message: msg, Response: r}
	})}, nil
}

// verifyTokens checks tokens together; each gets its owner or its status error.
func (s *Service) verifyTokens(ctx context.Context, tokens []string) ([]*authv1.VerifyTokenResponse, []error) {
	resps := make([]*authv1.VerifyTokenResponse, len(tokens))
	errs := make([]error, len(tokens))
	at := platform.ValidItems(len(tokens), errs, func(i int) error {
		return (&authv1.VerifyTokenRequest{Token: tokens[i]}).Validate()
	})
	hashes := make([]string, len(at))
	for j, i := range at {
		hashes[j] = hashToken(tokens[i])
	}
	if len(hashes) == 0 {
		return resps, errs
	}
	recs, rerrs := s.store.tokens(ctx, hashes)
	now := s.now()
	for j, i := range at {
		switch err := rerrs[j]; {
		// The key's TTL removes it in time; the expiry check also covers a Redis that is slow
		// to expire.
		case errors.Is(err, errNotFound), err == nil && !now.Before(recs[j].ExpiresAt):
			errs[i] = status.Error(codes.Unauthenticated, "invalid or expired token")
		case err != nil:
			errs[i] = platform.RedisStatus(ctx, err, "verify token")
		default:
			resps[i] = &authv1.VerifyTokenResponse{UserId: recs[j].UserID, Username: recs[j].Username, ExpiresAt: timestamppb.New(recs[j].ExpiresAt)}
		}
	}
	return resps, errs
}

// Logout revokes a token.
func (s *Service) Logout(ctx context.Context, req *authv1.LogoutRequest) (*authv1.LogoutResponse, error) {
	revoked, err := s.store.deleteToken(ctx, hashToken(req.GetToken()))
	if err != nil {
		return nil, platform.RedisStatus(ctx, err, "logout")
	}
	return &authv1.LogoutResponse{Revoked: revoked}, nil
}

// newToken returns a new random token and the hash it is stored under.
func newToken() (token, tokenHash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("read random: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

// hashToken is the key a token is stored under: a fast hash is right here, since the token has
// 256 random bits and cannot be guessed, unlike a password.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// clientAddr is the browser's address as passed by the edge, or else the caller's own.
// Only a well-formed IP address is used, so it is safe inside a key.
func clientAddr(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(ClientAddrHeader); len(v) > 0 {
			if a, err := netip.ParseAddr(v[0]); err == nil {
				return a.Unmap().String()
			}
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host, _, err := net.SplitHostPort(p.Addr.String())
		if err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				return a.Unmap().String()
			}
		}
	}
	return "unknown"
}

// hashStatus converts a hashing error into a gRPC status.
func hashStatus(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, errBusy):
		return status.Error(codes.ResourceExhausted, "server busy checking passwords; retry shortly")
	default:
		return status.Error(codes.Internal, "password hashing failed")
	}
}
