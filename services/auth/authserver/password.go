package authserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alexedwards/argon2id"
	"golang.org/x/sync/semaphore"
)

// argonParams are the argon2id parameters of new hashes: OWASP's minimum (19 MiB, 2 passes,
// 1 lane), a 128-bit random salt and a 256-bit key. Stored hashes carry their own parameters in
// the PHC string, so these can be raised later without breaking old hashes.
var argonParams = argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// errBusy says no hashing slot became free in time.
var errBusy = errors.New("password hashing is saturated")

// hasher computes and checks argon2id password hashes, at most a fixed number at once, so that
// a flood of logins queues (and then fails fast) instead of taking every CPU.
type hasher struct {
	slots *semaphore.Weighted
	wait  time.Duration
	// dummy is a hash of a random password, compared against when the user does not exist,
	// so an unknown user costs the same time as a wrong password.
	dummy string
}

func newHasher(concurrency int, wait time.Duration) (*hasher, error) {
	if concurrency < 1 {
		concurrency = 1
	}
	dummy, err := argon2id.CreateHash("not a password: only spends the time of a real check", &argonParams)
	if err != nil {
		return nil, fmt.Errorf("create dummy hash: %w", err)
	}
	return &hasher{slots: semaphore.NewWeighted(int64(concurrency)), wait: wait, dummy: dummy}, nil
}

// acquire waits for a hashing slot, for at most h.wait.
func (h *hasher) acquire(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, h.wait)
	defer cancel()
	if err := h.slots.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errBusy
	}
	return nil
}

// hash returns the PHC string of password.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.slots.Release(1)
	phc, err := argon2id.CreateHash(password, &argonParams)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return phc, nil
}

// check reports whether password matches the PHC string phc. An empty phc (no such user) is
// compared against the dummy hash, and never matches.
func (h *hasher) check(ctx context.Context, password, phc string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.slots.Release(1)
	if phc == "" {
		_, err := argon2id.ComparePasswordAndHash(password, h.dummy)
		return false, err
	}
	ok, err := argon2id.ComparePasswordAndHash(password, phc)
	if err != nil {
		return false, fmt.Errorf("check password: %w", err)
	}
	return ok, nil
}
