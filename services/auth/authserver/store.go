package authserver

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// keys builds the auth service's Redis keys. Every key starts with the service prefix, and the
// part in braces is the key's hash tag, so on Redis Cluster each record lives in one slot.
type keys struct{ prefix string }

// user is the hash of one user, by lower-cased username (usernames are ASCII).
func (k keys) user(username string) string {
	return k.prefix + "user:{" + strings.ToLower(username) + "}"
}

// token is the hash of one token, by the hex SHA-256 of the token: the token itself is never
// stored.
func (k keys) token(tokenHash string) string { return k.prefix + "token:{" + tokenHash + "}" }

// userFailures counts recent failed logins of one username.
func (k keys) userFailures(username string) string {
	return k.prefix + "fail:user:{" + strings.ToLower(username) + "}"
}

// addrFailures counts recent failed logins from one client address.
func (k keys) addrFailures(addr string) string { return k.prefix + "fail:addr:{" + addr + "}" }

var (
	//go:embed lua/create_user.lua
	createUserSrc string
	//go:embed lua/count_failure.lua
	countFailureSrc string
	//go:embed lua/issue_token.lua
	issueTokenSrc string

	createUserScript   = redis.NewScript(createUserSrc)
	countFailureScript = redis.NewScript(countFailureSrc)
	issueTokenScript   = redis.NewScript(issueTokenSrc)
)

// errNotFound says a record does not exist.
var errNotFound = errors.New("not found")

// userRecord is a stored user.
type userRecord struct {
	ID       string
	Username string
	PHC      string
}

// tokenRecord is a stored token.
type tokenRecord struct {
	UserID    string
	Username  string
	ExpiresAt time.Time
}

// store is the Redis side of the auth service.
type store struct {
	rdb  redis.UniversalClient
	keys keys
}

func (s *store) userExists(ctx context.Context, username string) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.keys.user(username)).Result()
	if err != nil {
		return false, fmt.Errorf("check user: %w", err)
	}
	return n == 1, nil
}

// createUser stores u unless its username is taken; it reports whether it was created.
func (s *store) createUser(ctx context.Context, u userRecord, now time.Time) (bool, error) {
	n, err := createUserScript.Run(ctx, s.rdb, []string{s.keys.user(u.Username)},
		u.ID, u.Username, u.PHC, now.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("create user: %w", err)
	}
	return n == 1, nil
}

// user loads a user by username; errNotFound when there is none.
func (s *store) user(ctx context.Context, username string) (userRecord, error) {
	vals, err := s.rdb.HMGet(ctx, s.keys.user(username), "id", "username", "phc").Result()
	if err != nil {
		return userRecord{}, fmt.Errorf("load user: %w", err)
	}
	id, _ := vals[0].(string)
	name, _ := vals[1].(string)
	phc, _ := vals[2].(string)
	if id == "" || phc == "" {
		return userRecord{}, errNotFound
	}
	return userRecord{ID: id, Username: name, PHC: phc}, nil
}

func (s *store) saveToken(ctx context.Context, tokenHash string, t tokenRecord, ttl time.Duration) error {
	err := issueTokenScript.Run(ctx, s.rdb, []string{s.keys.token(tokenHash)},
		t.UserID, t.Username, t.ExpiresAt.UnixMilli(), ttl.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("save token: %w", err)
	}
	return nil
}

// tokens loads several tokens' records in one round trip; each missing one is errNotFound.
func (s *store) tokens(ctx context.Context, tokenHashes []string) ([]tokenRecord, []error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(tokenHashes))
	for i, h := range tokenHashes {
		cmds[i] = pipe.HMGet(ctx, s.keys.token(h), "user_id", "username", "exp_ms")
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	recs, errs := make([]tokenRecord, len(cmds)), make([]error, len(cmds))
	for i, c := range cmds {
		vals, err := c.Result()
		if err != nil {
			errs[i] = fmt.Errorf("load token: %w", err)
			continue
		}
		uid, _ := vals[0].(string)
		name, _ := vals[1].(string)
		expStr, _ := vals[2].(string)
		exp, convErr := strconv.ParseInt(expStr, 10, 64)
		if uid == "" || convErr != nil {
			errs[i] = errNotFound
			continue
		}
		recs[i] = tokenRecord{UserID: uid, Username: name, ExpiresAt: time.UnixMilli(exp)}
	}
	return recs, errs
}

// deleteToken revokes a token and reports whether it existed.
func (s *store) deleteToken(ctx context.Context, tokenHash string) (bool, error) {
	n, err := s.rdb.Del(ctx, s.keys.token(tokenHash)).Result()
	if err != nil {
		return false, fmt.Errorf("delete token: %w", err)
	}
	return n == 1, nil
}

// failures returns the recent failed-login counts of a username and of a client address. The
// two keys live in different slots, so they are read in one pipeline, not one command.
func (s *store) failures(ctx context.Context, username, addr string) (user, byAddr int64, err error) {
	pipe := s.rdb.Pipeline()
	u := pipe.Get(ctx, s.keys.userFailures(username))
	a := pipe.Get(ctx, s.keys.addrFailures(addr))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, fmt.Errorf("read login failures: %w", err)
	}
	user, _ = u.Int64()
	byAddr, _ = a.Int64()
	return user, byAddr, nil
}

// countFailure records a failed login of username from addr, in windows of length window. The
// script is sent whole (EVAL): inside a pipeline, EVALSHA could not fall back on NOSCRIPT.
func (s *store) countFailure(ctx context.Context, username, addr string, window time.Duration) error {
	pipe := s.rdb.Pipeline()
	countFailureScript.Eval(ctx, pipe, []string{s.keys.userFailures(username)}, window.Milliseconds())
	countFailureScript.Eval(ctx, pipe, []string{s.keys.addrFailures(addr)}, window.Milliseconds())
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("count login failure: %w", err)
	}
	return nil
}

// clearUserFailures forgets a username's failed logins after a successful one.
func (s *store) clearUserFailures(ctx context.Context, username string) error {
	if err := s.rdb.Del(ctx, s.keys.userFailures(username)).Err(); err != nil {
		return fmt.Errorf("clear login failures: %w", err)
	}
	return nil
}
