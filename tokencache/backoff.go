package tokencache

import (
	"crypto/sha256"
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

	// DefaultBanMaxFailures and DefaultBanWindow are the default failed-login
	// budget: one below the ban extension's five failures in five minutes.
	DefaultBanMaxFailures = 4
	DefaultBanWindow      = 5 * time.Minute

	// banMargin is added to the window after a 429, since the ban ends a
	// moment after the window and clocks differ.
	banMargin = 10 * time.Second
)

var (
	// ErrBudgetSpent means guacproxy sent as many failed logins as the
	// budget allows within its window, and sends no more until the window
	// moves on, so that Guacamole never bans its address.
	ErrBudgetSpent = errors.New("failed-login budget spent")
	// ErrLoginsBusy means the budget's places were all held by logins
	// still waiting for Guacamole's answer, for longer than a login may
	// take.
	ErrLoginsBusy = errors.New("too many logins awaiting Guacamole's answer")
	// ErrMisconfigured means the identity's account asks for a second
	// factor; no login is tried again until its credentials change.
	ErrMisconfigured = errors.New("account requires a second factor: exempt it from TOTP/Duo")
)

// BackoffError is returned instead of logging in while an identity, or every
// identity, waits after failed logins. RetryAfter is zero when waiting does
// not help (the identity's configuration must change).
type BackoffError struct {
	Identity   string
	RetryAfter time.Duration
	// Cause is the failure that started the wait.
	Cause error
}

func (e *BackoffError) Error() string {
	if e.RetryAfter == 0 {
		return fmt.Sprintf("logins for identity %q stopped until its configuration changes: %v",
			e.Identity, e.Cause)
	}
	return fmt.Sprintf("logins for identity %q paused for %s after: %v",
		e.Identity, e.RetryAfter.Round(time.Second), e.Cause)
}

func (e *BackoffError) Unwrap() error { return e.Cause }

// backoff tracks failed logins: per identity, the wait before its next
// attempt; across identities, the failed-login budget and the pause after a
// ban.
//
// The budget is a sliding window of failure times rather than a token
// bucket: a bucket refills steadily and would let more failures than the
// ban extension tolerates fall within one of its windows.
type backoff struct {
	maxFailures int
	window      time.Duration

	mu          sync.Mutex
	failures    map[string]*failure
	recent      []time.Time   // failures within the window, oldest first
	inflight    int           // logins sent and not answered: each may fail
	changed     chan struct{} // closed, and replaced, when a login is answered
	bannedUntil time.Time
	banCause    error
}

type failure struct {
	count int
	until time.Time // zero with stuck: until the credentials change
	stuck bool
	cause error
	creds [32]byte // the credentials that failed
}

func newBackoff(maxFailures int, window time.Duration) *backoff {
	return &backoff{maxFailures: maxFailures, window: window,
		failures: make(map[string]*failure), changed: make(chan struct{})}
}

// credsSum identifies a set of credentials without keeping them.
func credsSum(id Identity) [32]byte {
	return sha256.Sum256([]byte(id.Username + "\x00" + id.Password))
}

// wait returns a *BackoffError if id must not log in at now. A failure of
// other credentials than id's current ones is forgotten: a changed password
// deserves a prompt try.
func (b *backoff) wait(id Identity, now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waitLocked(id, now)
}

// begin is wait for a login about to be sent: if it may be sent, it holds
// a place in the budget until fail or succeed, so that logins of several
// identities sent at once cannot overrun it together. When only logins in
// flight fill the budget, nothing has failed yet: begin returns a channel
// that is closed when one of them is answered, and the caller tries again.
func (b *backoff) begin(id Identity, now time.Time) (<-chan struct{}, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.waitLocked(id, now); err != nil {
		return nil, err
	}
	if len(b.recent)+b.inflight >= b.maxFailures {
		return b.changed, nil
	}
	b.inflight++
	return nil, nil
}

// answered releases a login's place in the budget. Called with b.mu held.
func (b *backoff) answered() {
	b.inflight--
	close(b.changed)
	b.changed = make(chan struct{})
}

// waitLocked returns a *BackoffError if id must not log in at now because
// of failures; logins in flight are begin's business.
func (b *backoff) waitLocked(id Identity, now time.Time) error {
	if f := b.failures[id.Name]; f != nil {
		switch {
		case f.creds != credsSum(id):
			delete(b.failures, id.Name)
		case f.stuck:
			return &BackoffError{Identity: id.Name, Cause: f.cause}
		case now.Before(f.until):
			return &BackoffError{Identity: id.Name, RetryAfter: f.until.Sub(now), Cause: f.cause}
		}
	}
	if now.Before(b.bannedUntil) {
		return &BackoffError{Identity: id.Name, RetryAfter: b.bannedUntil.Sub(now), Cause: b.banCause}
	}
	b.expire(now)
	if len(b.recent) >= b.maxFailures {
		return &BackoffError{Identity: id.Name, RetryAfter: b.recent[0].Add(b.window).Sub(now),
			Cause: fmt.Errorf("%w: %d failed logins within %s", ErrBudgetSpent, len(b.recent), b.window)}
	}
	return nil
}

// expire drops failures that left the window. Called with b.mu held.
func (b *backoff) expire(now time.Time) {
	i := 0
	for i < len(b.recent) && now.Sub(b.recent[i]) >= b.window {
		i++
	}
	b.recent = b.recent[i:]
}

// fail records a failed login of id and returns how long it now waits;
// zero means until its credentials change.
func (b *backoff) fail(id Identity, err error, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.answered()
	if errors.Is(err, ErrBanned) {
		// Guacamole's ban lasts its window from the last failure, which
		// was at the latest now; nothing is sent until it is surely over.
		d := b.window + banMargin
		b.bannedUntil, b.banCause = now.Add(d), err
		return d
	}
	if countsAsFailure(err) {
		b.recent = append(b.recent, now)
	}

	f := b.failures[id.Name]
	if f == nil || f.creds != credsSum(id) {
		f = &failure{creds: credsSum(id)}
		b.failures[id.Name] = f
	}
	f.count++
	f.cause = err
	if errors.Is(err, ErrSecondFactor) {
		f.stuck, f.cause = true, fmt.Errorf("%w: %w", ErrMisconfigured, err)
		return 0
	}
	lo, hi := transientBackoffMin, transientBackoffMax
	if errors.Is(err, ErrInvalidCredentials) {
		lo, hi = credentialBackoffMin, credentialBackoffMax
	}
	d := lo << min(f.count-1, 20)
	// Jitter only upwards, so the documented minimum holds, and spread
	// identities that failed together.
	d += rand.N(d/5 + 1) //nolint:gosec // jitter needs no secrecy
	d = min(d, hi)
	f.until = now.Add(d)
	return d
}

// countsAsFailure reports whether the ban extension counts err as a failed
// login from guacproxy's address: Guacamole rejected the credentials. A
// network error or a 5xx never reached the authentication step.
func countsAsFailure(err error) bool {
	return errors.Is(err, ErrInvalidCredentials) || errors.Is(err, ErrSecondFactor)
}

// succeed clears the failures of name.
func (b *backoff) succeed(name string) {
	b.mu.Lock()
	b.answered()
	delete(b.failures, name)
	b.mu.Unlock()
}
