package tokencache

import (
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"time"
)

// Identity is the Guacamole account behind one service identity. Name is the
// cache key and the only part that is ever logged.
type Identity struct {
	Name     string
	Username string
	Password string
}

// Token is a Guacamole auth token held for one identity. The token itself is
// only reachable through Value, so that it is not printed by accident.
type Token struct {
	identity Identity
	session  Session
	fp       string
	created  time.Time

	lastUsed atomic.Int64 // unix nanoseconds of the last hand-out
	dead     atomic.Bool  // Guacamole no longer knows it
	revoking atomic.Bool  // a revocation was started
	reason   string       // why it left the cache; written under Cache.mu

	// leases counts the open tunnels using the token, and retired tells
	// that it left the cache while some were open; both under Cache.mu.
	leases  int
	retired bool
}

func newToken(id Identity, s *Session, now time.Time) *Token {
	t := &Token{identity: id, session: *s, fp: Fingerprint(s.Token), created: now}
	t.lastUsed.Store(now.UnixNano())
	return t
}

// Value returns the Guacamole auth token. Never log it; log Fingerprint.
func (t *Token) Value() string { return t.session.Token }

// Fingerprint returns a short, non-reversible label for the token, safe for
// logs.
func (t *Token) Fingerprint() string { return t.fp }

// Identity returns the name of the identity the token belongs to.
func (t *Token) Identity() string { return t.identity.Name }

// Username returns the Guacamole username the token was issued to.
func (t *Token) Username() string { return t.session.Username }

// DataSource returns the data source that authenticated the user.
func (t *Token) DataSource() string { return t.session.DataSource }

// AvailableDataSources returns every data source that gave the user a
// context.
func (t *Token) AvailableDataSources() []string {
	return append([]string(nil), t.session.AvailableDataSources...)
}

// touch records a hand-out. Writes are skipped within the same second so that
// concurrent requests do not all write the same cache line.
func (t *Token) touch(now time.Time) {
	n := now.UnixNano()
	if n-t.lastUsed.Load() >= int64(time.Second) {
		t.lastUsed.Store(n)
	}
}

// Fingerprint returns the first eight hex digits of the SHA-256 of a token:
// enough to follow one token through the logs, useless for using it.
func Fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}
