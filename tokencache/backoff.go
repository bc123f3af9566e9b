package tokencache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Guacamole's ban extension bans an address after five failed logins in five
// minutes, and every identity behind one guacproxy shares that address. A
// failing identity must therefore wait between attempts; how long depends on
// whether waiting can help.
const (
	credentialBackoffMin = time.Minute
	credentialBackoffMax = 30 * time.Minute
	transientBackoffMin  = time.Second
	transientBackoffMax  = time.Minute
	// banPause is how long all logins stop after Guacamole answered 429: the
	// ban extension's default ban duration.
	banPause = 5 * time.Minute
)

// BackoffError is returned instead of logging in while an identity, or every
// identity, waits after failed logins.
type BackoffError struct {
	Identity   string
	RetryAfter time.Duration
	// Cause is the failure that started the wait.
	Cause error
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("logins for identity %q paused for %s after: %v",
		e.Identity, e.RetryAfter.Round(time.Second), e.Cause)
}

func (e *BackoffError) Unwrap() error { return e.Cause }

// backoff tracks failed logins per identity and the global pause after a ban.
type backoff struct {
	mu          sync.Mutex
	failures    map[string]*failure
	bannedUntil time.Time
	banCause    error
}

type failure struct {
	count int
	until time.Time
	cause error
}

func newBackoff() *backoff {
	return &backoff{failures: make(map[string]*failure)}
}

// wait returns a *BackoffError if name must not log in at now.
func (b *backoff) wait(name string, now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Before(b.bannedUntil) {
		return &BackoffError{Identity: name, RetryAfter: b.bannedUntil.Sub(now), Cause: b.banCause}
	}
	if f := b.failures[name]; f != nil && now.Before(f.until) {
		return &BackoffError{Identity: name, RetryAfter: f.until.Sub(now), Cause: f.cause}
	}
	return nil
}

// fail records a failed login of name and returns how long it now waits.
func (b *backoff) fail(name string, err error, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if errors.Is(err, ErrBanned) {
		b.bannedUntil, b.banCause = now.Add(banPause), err
		return banPause
	}
	f := b.failures[name]
	if f == nil {
		f = &failure{}
		b.failures[name] = f
	}
	f.count++
	lo, hi := transientBackoffMin, transientBackoffMax
	if errors.Is(err, ErrInvalidCredentials) || errors.Is(err, ErrSecondFactor) {
		lo, hi = credentialBackoffMin, credentialBackoffMax
	}
	d := lo << min(f.count-1, 20)
	// Jitter only upwards, so the documented minimum holds, and spread
	// identities that failed together.
	d += rand.N(d/5 + 1) //nolint:gosec // jitter needs no secrecy
	d = min(d, hi)
	f.until, f.cause = now.Add(d), err
	return d
}

// succeed clears the failures of name.
func (b *backoff) succeed(name string) {
	b.mu.Lock()
	delete(b.failures, name)
	b.mu.Unlock()
}
