package edgeserver

import (
	"sync"

	"golang.org/x/time/rate"
)

// userLimits holds one token bucket per user with connections on this edge, shared by the
// user's connections and dropped with the last of them.
type userLimits struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	users map[string]*userLimit
}

type userLimit struct {
	limiter *rate.Limiter
	refs    int
}

func newUserLimits(r float64, burst int) *userLimits {
	return &userLimits{rate: rate.Limit(r), burst: burst, users: map[string]*userLimit{}}
}

func (l *userLimits) acquire(userID string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.users[userID]
	if u == nil {
		u = &userLimit{limiter: rate.NewLimiter(l.rate, l.burst)}
		l.users[userID] = u
	}
	u.refs++
	return u.limiter
}

func (l *userLimits) release(userID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u := l.users[userID]; u != nil {
		if u.refs--; u.refs <= 0 {
			delete(l.users, userID)
		}
	}
}
