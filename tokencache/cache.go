// Package tokencache holds the Guacamole auth tokens of guacproxy's service
// identities: it logs in once per identity, hands the token out while
// Guacamole would still accept it, and revokes it when it leaves the cache.
//
// Guacamole drops a session after it has been idle for api-session-timeout
// minutes, checked by a sweep that runs once a minute. The cache therefore
// retires a token that has been idle for the session timeout less a safety
// margin, before Guacamole could drop it silently, and one that reached the
// configured maximum lifetime however busy it is. Retired tokens are revoked
// with DELETE /api/tokens/{token}.
//
// Tokens are stored in a go-cache without expiry: the cache decides itself
// when a token is due, against an injectable clock, because Guacamole's
// expiry is idle time and go-cache's would need a write on every request.
package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	gocache "github.com/patrickmn/go-cache"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Defaults for Options fields left zero.
const (
	DefaultCallTimeout       = 10 * time.Second
	DefaultSessionTimeout    = 60 * time.Minute
	DefaultMaxLifetime       = 12 * time.Hour
	DefaultSweepInterval     = 15 * time.Second
	DefaultRevokeConcurrency = 16

	// minIdleMargin is how long before Guacamole's own idle timeout a token
	// is retired: Guacamole sweeps once a minute, and one more minute covers
	// clock skew and the time a request spends in flight.
	minIdleMargin = 2 * time.Minute
)

// Reasons a token leaves the cache, as logged.
const (
	reasonIdle        = "idle"
	reasonMaxLifetime = "max_lifetime"
	reasonDead        = "dead"
	reasonReplaced    = "replaced"
	reasonClose       = "shutdown"
)

var errClosed = errors.New("token cache is closed")

// Options configure a Cache.
type Options struct {
	// Client calls Guacamole. Required.
	Client *Client
	// SessionTimeout is Guacamole's api-session-timeout. Tokens idle for
	// this long less a margin (the larger of two minutes and a tenth) are
	// retired. If zero, DefaultSessionTimeout.
	SessionTimeout time.Duration
	// MaxLifetime retires a token this long after login even if it is busy.
	// If zero, DefaultMaxLifetime.
	MaxLifetime time.Duration
	// CallTimeout bounds each login, check and revoke call. If zero,
	// DefaultCallTimeout.
	CallTimeout time.Duration
	// SweepInterval is how often retired tokens are looked for and revoked.
	// If zero, DefaultSweepInterval; if negative, there is no background
	// sweep and the owner calls Sweep.
	SweepInterval time.Duration
	// RevokeConcurrency bounds the revocations running at once. If zero,
	// DefaultRevokeConcurrency.
	RevokeConcurrency int
	// BanMaxFailures and BanWindow are the failed-login budget shared by
	// all identities: once BanMaxFailures logins were refused within
	// BanWindow, none is sent until the oldest leaves the window. A 429
	// from Guacamole stops all logins for BanWindow. Keep them below
	// Guacamole's ban settings. If zero, DefaultBanMaxFailures and
	// DefaultBanWindow.
	BanMaxFailures int
	BanWindow      time.Duration
	// Clock returns the current time. If nil, time.Now.
	Clock func() time.Time
	// Logger receives the cache's logs. If nil, nothing is logged.
	Logger *zap.Logger
	// Observer is told what the cache does, for metrics. If nil, nothing
	// is told.
	Observer Observer
}

// Observer is told what a Cache does. Its methods must be fast and safe
// for concurrent use. Label-like arguments are identity names from the
// configuration and the fixed result names below, never request data.
type Observer interface {
	// Lookup reports a request for a token that was in the cache (hit) or
	// not.
	Lookup(hit bool)
	// Login reports the result of a login: one of LoginOK,
	// LoginInvalidCredentials, LoginMFARequired, LoginBanned, LoginError.
	Login(identity, result string)
	// Revocation reports the result of a revocation: RevokeOK,
	// RevokeAlreadyGone or RevokeError.
	Revocation(result string)
}

// Results reported to an Observer.
const (
	LoginOK                 = "ok"
	LoginInvalidCredentials = "invalid_credentials" //nolint:gosec // a metric label, not a credential
	LoginMFARequired        = "mfa_required"
	LoginBanned             = "banned"
	LoginError              = "error"

	RevokeOK          = "ok"
	RevokeAlreadyGone = "already_gone"
	RevokeError       = "error"
)

// loginResult names the outcome of a login for an Observer.
func loginResult(err error) string {
	switch {
	case err == nil:
		return LoginOK
	case errors.Is(err, ErrInvalidCredentials):
		return LoginInvalidCredentials
	case errors.Is(err, ErrSecondFactor):
		return LoginMFARequired
	case errors.Is(err, ErrBanned):
		return LoginBanned
	}
	return LoginError
}

type nopObserver struct{}

func (nopObserver) Lookup(bool)          {}
func (nopObserver) Login(string, string) {}
func (nopObserver) Revocation(string)    {}

// Stats counts what a Cache has done since it was created.
type Stats struct {
	Logins        int64 // successful logins
	LoginFailures int64 // logins Guacamole or the network refused
	Revoked       int64 // tokens Guacamole confirmed revoked
	AlreadyGone   int64 // tokens Guacamole no longer knew (404, or found dead)
	RevokeErrors  int64 // revocations that failed
	Live          int   // tokens held and not yet revoked
}

// Cache holds one Guacamole token per identity. It is safe for concurrent
// use.
type Cache struct {
	client      *Client
	idle        time.Duration
	maxLife     time.Duration
	callTimeout time.Duration
	now         func() time.Time
	log         *zap.Logger
	obs         Observer

	store   *gocache.Cache
	logins  singleflight.Group
	checks  singleflight.Group
	backoff *backoff

	// mu guards replacing and removing store entries, live and closed.
	mu     sync.Mutex
	live   map[*Token]struct{}
	closed bool

	// accounts are the identities registered by SetIdentities, by name.
	accounts atomic.Pointer[map[string]Identity]

	revokeSem chan struct{}
	revokes   sync.WaitGroup
	stop      chan struct{}
	sweeper   sync.WaitGroup

	logins0, loginFailures, revoked, alreadyGone, revokeErrors atomic.Int64
}

// New returns a Cache and starts its background sweep. Call Close to revoke
// every token and stop it.
func New(opts Options) *Cache {
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = DefaultSessionTimeout
	}
	if opts.MaxLifetime <= 0 {
		opts.MaxLifetime = DefaultMaxLifetime
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	if opts.RevokeConcurrency <= 0 {
		opts.RevokeConcurrency = DefaultRevokeConcurrency
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.BanMaxFailures <= 0 {
		opts.BanMaxFailures = DefaultBanMaxFailures
	}
	if opts.BanWindow <= 0 {
		opts.BanWindow = DefaultBanWindow
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}

	c := &Cache{
		client:      opts.Client,
		idle:        IdleLimit(opts.SessionTimeout),
		maxLife:     opts.MaxLifetime,
		callTimeout: opts.CallTimeout,
		now:         opts.Clock,
		log:         opts.Logger.Named("tokencache"),
		obs:         opts.Observer,
		// Expiry is decided by the cache (see the package comment), so
		// go-cache neither expires items nor runs its janitor goroutine.
		store:     gocache.New(gocache.NoExpiration, 0),
		backoff:   newBackoff(opts.BanMaxFailures, opts.BanWindow),
		live:      make(map[*Token]struct{}),
		revokeSem: make(chan struct{}, opts.RevokeConcurrency),
		stop:      make(chan struct{}),
	}
	c.store.OnEvicted(c.evicted)

	if opts.SweepInterval > 0 {
		c.sweeper.Add(1)
		go c.sweepEvery(opts.SweepInterval)
	}
	return c
}

// IdleLimit returns how long a token may stay unused before the cache retires
// it, given Guacamole's session timeout.
func IdleLimit(sessionTimeout time.Duration) time.Duration {
	margin := max(minIdleMargin, sessionTimeout/10)
	return max(sessionTimeout-margin, time.Second)
}

// Token returns a live token for id, logging in if the cache has none.
// Concurrent callers for the same identity share one login; each waits only
// as long as its own ctx allows. While the identity backs off after failed
// logins, Token returns a *BackoffError without calling Guacamole. If
// SetIdentities registered an identity of id's name, its account is used
// rather than id's, so that requests begun before a reload cannot bring
// back the old credentials.
func (c *Cache) Token(ctx context.Context, id Identity) (*Token, error) {
	id = c.registered(id)
	now := c.now()
	if t := c.current(id, now); t != nil {
		t.touch(now)
		c.obs.Lookup(true)
		return t, nil
	}
	c.obs.Lookup(false)
	if err := c.backoff.wait(id, now); err != nil {
		return nil, err
	}

	ch := c.logins.DoChan(id.Name, func() (any, error) { return c.login(id) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Token), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// current returns the cached token of id if it may still be handed out, and
// retires it if it is due.
func (c *Cache) current(id Identity, now time.Time) *Token {
	v, ok := c.store.Get(id.Name)
	if !ok {
		return nil
	}
	t := v.(*Token)
	reason := c.due(t, now)
	if reason == "" && t.identity != id {
		// The identity's account changed (a reload): the old session
		// belongs to the old account.
		reason = reasonReplaced
	}
	if reason == "" {
		return t
	}
	c.remove(t, reason)
	return nil
}

func (c *Cache) due(t *Token, now time.Time) string {
	switch {
	case t.dead.Load():
		return reasonDead
	case now.Sub(t.created) >= c.maxLife:
		return reasonMaxLifetime
	case now.UnixNano()-t.lastUsed.Load() >= int64(c.idle):
		return reasonIdle
	}
	return ""
}

// login runs once per identity at a time, under singleflight. It does not
// use any caller's context: the callers that share it may leave, and the
// token is still worth caching for the next.
func (c *Cache) login(id Identity) (*Token, error) {
	now := c.now()
	if t := c.current(id, now); t != nil {
		return t, nil // a login that just finished
	}

	ctx, cancel := context.WithTimeout(context.Background(), c.callTimeout)
	defer cancel()
	for {
		answered, err := c.backoff.begin(id, c.now())
		if err != nil {
			return nil, err
		}
		if answered == nil {
			break
		}
		// Other identities' logins fill the budget; one of them may fail.
		select {
		case <-answered:
		case <-ctx.Done():
			return nil, &BackoffError{Identity: id.Name, RetryAfter: time.Second, Cause: ErrLoginsBusy}
		}
	}
	s, err := c.client.Login(ctx, id.Username, id.Password)
	if err != nil {
		c.loginFailures.Add(1)
		c.obs.Login(id.Name, loginResult(err))
		wait := c.backoff.fail(id, err, c.now())
		if wait == 0 {
			c.log.Error("login failed; not retrying until the identity's configuration changes",
				zap.String("identity", id.Name), zap.Error(err))
		} else {
			c.log.Warn("login failed", zap.String("identity", id.Name),
				zap.Duration("retry_in", wait), zap.Error(err))
		}
		return nil, err
	}
	c.backoff.succeed(id.Name)
	c.logins0.Add(1)
	c.obs.Login(id.Name, LoginOK)

	t := newToken(id, s, c.now())
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.revokeAsync(t)
		return nil, errClosed
	}
	c.live[t] = struct{}{}
	if old, ok := c.store.Get(id.Name); ok {
		// Set does not report overwritten items to OnEvicted.
		c.store.Delete(id.Name)
		old.(*Token).reason = reasonReplaced
	}
	c.store.Set(id.Name, t, gocache.NoExpiration)
	c.mu.Unlock()

	c.log.Info("logged in", zap.String("identity", id.Name),
		zap.String("username", s.Username), zap.String("data_source", s.DataSource),
		zap.String("token_fp", t.fp))
	return t, nil
}

// remove takes t out of the cache if it is still the identity's token; the
// eviction callback then revokes it.
func (c *Cache) remove(t *Token, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.store.Get(t.identity.Name); ok && v == t {
		t.reason = reason
		c.store.Delete(t.identity.Name)
	}
}

// evicted is go-cache's eviction callback. It runs with c.mu held. A token
// that open tunnels still use is revoked when the last one closes, since
// revoking a session closes its tunnels.
func (c *Cache) evicted(_ string, v any) {
	t := v.(*Token)
	t.retired = true
	c.log.Info("token retired", zap.String("identity", t.identity.Name),
		zap.String("token_fp", t.fp), zap.String("reason", t.reason),
		zap.Int("open_tunnels", t.leases))
	if !c.closed && t.leases == 0 {
		c.revokeAsync(t)
	}
}

// Lease returns a live token for id, like Token, held for an open tunnel
// until release is called. A leased token is still retired on time, so new
// requests get a new token, but it is only revoked once its last lease is
// released. Call release exactly once.
func (c *Cache) Lease(ctx context.Context, id Identity) (t *Token, release func(), err error) {
	for {
		if t, err = c.Token(ctx, id); err != nil {
			return nil, nil, err
		}
		c.mu.Lock()
		if !t.retired && !c.closed {
			t.leases++
			c.mu.Unlock()
			return t, func() { c.release(t) }, nil
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil, nil, errClosed
		}
		// Retired between Token and here: take the next one.
	}
}

func (c *Cache) release(t *Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t.leases--
	if t.leases == 0 && t.retired && !c.closed {
		c.log.Info("last tunnel closed", zap.String("identity", t.identity.Name),
			zap.String("token_fp", t.fp))
		c.revokeAsync(t)
	}
}

// Dead asks Guacamole whether t is still alive and reports whether it is
// dead, in which case it has been dropped and the next Token call logs in
// again. Guacamole answers 403 PERMISSION_DENIED both for a dead token and
// for a real lack of permission, so this is how the two are told apart; a
// tunnel also checks its token first, since a tunnel cannot be replayed.
// Concurrent calls for the same token share one check.
func (c *Cache) Dead(ctx context.Context, t *Token) (bool, error) {
	if t.dead.Load() {
		return true, nil
	}
	ch := c.checks.DoChan(t.fp+t.session.Token, func() (any, error) {
		cctx, cancel := context.WithTimeout(context.Background(), c.callTimeout)
		defer cancel()
		return c.client.Check(cctx, t.session.Token)
	})
	var alive bool
	select {
	case r := <-ch:
		if r.Err != nil {
			return false, r.Err
		}
		alive = r.Val.(bool)
	case <-ctx.Done():
		return false, ctx.Err()
	}
	if alive {
		return false, nil
	}
	if !t.dead.Swap(true) {
		c.log.Info("token found dead", zap.String("identity", t.identity.Name),
			zap.String("token_fp", t.fp))
	}
	c.remove(t, reasonDead)
	return true, nil
}

// SetIdentities registers the identities' accounts, replacing those of an
// earlier call, and retires the tokens of identities that were registered
// before and are now missing or have another username or password (a
// leased token is revoked when its last tunnel closes). It returns the
// names of those identities.
func (c *Cache) SetIdentities(ids []Identity) []string {
	next := make(map[string]Identity, len(ids))
	for _, id := range ids {
		next[id.Name] = id
	}
	prev := c.accounts.Swap(&next)
	var retired []string
	if prev != nil {
		for name, old := range *prev {
			if now, ok := next[name]; !ok || now != old {
				c.Forget(name)
				retired = append(retired, name)
			}
		}
	}
	return retired
}

// registered returns the registered account of id's identity, or id.
func (c *Cache) registered(id Identity) Identity {
	if m := c.accounts.Load(); m != nil {
		if reg, ok := (*m)[id.Name]; ok {
			return reg
		}
	}
	return id
}

// Forget retires the token of the named identity, if any.
func (c *Cache) Forget(name string) {
	if v, ok := c.store.Get(name); ok {
		c.remove(v.(*Token), reasonReplaced)
	}
}

// Sweep retires every token that is due. The background sweep calls it;
// tests with a fake clock call it directly.
func (c *Cache) Sweep() {
	now := c.now()
	for _, item := range c.store.Items() {
		t := item.Object.(*Token)
		if reason := c.due(t, now); reason != "" {
			c.remove(t, reason)
		}
	}
}

func (c *Cache) sweepEvery(d time.Duration) {
	defer c.sweeper.Done()
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			c.Sweep()
		case <-c.stop:
			return
		}
	}
}

// revokeAsync revokes t in the background, at most RevokeConcurrency at once.
func (c *Cache) revokeAsync(t *Token) {
	c.revokes.Add(1)
	go func() {
		defer c.revokes.Done()
		c.revokeSem <- struct{}{}
		defer func() { <-c.revokeSem }()
		ctx, cancel := context.WithTimeout(context.Background(), c.callTimeout)
		defer cancel()
		_ = c.revoke(ctx, t) // counted and logged by revoke
	}()
}

// revoke ends t's session at Guacamole, once, and forgets it.
func (c *Cache) revoke(ctx context.Context, t *Token) error {
	if t.revoking.Swap(true) {
		return nil
	}
	defer func() {
		c.mu.Lock()
		delete(c.live, t)
		c.mu.Unlock()
	}()
	if t.dead.Load() {
		c.alreadyGone.Add(1)
		c.obs.Revocation(RevokeAlreadyGone)
		return nil
	}

	err := c.client.Revoke(ctx, t.session.Token)
	switch {
	case err == nil:
		c.revoked.Add(1)
		c.obs.Revocation(RevokeOK)
		c.log.Debug("token revoked", zap.String("identity", t.identity.Name),
			zap.String("token_fp", t.fp))
	case errors.Is(err, ErrNotFound):
		c.alreadyGone.Add(1)
		c.obs.Revocation(RevokeAlreadyGone)
		c.log.Debug("token already gone", zap.String("identity", t.identity.Name),
			zap.String("token_fp", t.fp))
		err = nil
	default:
		c.revokeErrors.Add(1)
		c.obs.Revocation(RevokeError)
		c.log.Warn("revoke failed", zap.String("identity", t.identity.Name),
			zap.String("token_fp", t.fp), zap.Error(err))
	}
	return err
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	live := len(c.live)
	c.mu.Unlock()
	return Stats{
		Logins:        c.logins0.Load(),
		LoginFailures: c.loginFailures.Load(),
		Revoked:       c.revoked.Load(),
		AlreadyGone:   c.alreadyGone.Load(),
		RevokeErrors:  c.revokeErrors.Load(),
		Live:          live,
	}
}

// Close stops the cache and revokes every token it holds, concurrently and
// bounded by ctx. Tokens revoked or found gone before ctx ended are counted
// in the returned Stats; the error reports revocations that did not finish.
// Logins that finish after Close are revoked at once.
func (c *Cache) Close(ctx context.Context) (Stats, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.Stats(), errClosed
	}
	c.closed = true
	pending := make([]*Token, 0, len(c.live))
	for t := range c.live {
		t.reason = reasonClose
		pending = append(pending, t)
	}
	c.store.Flush()
	c.mu.Unlock()

	close(c.stop)
	c.sweeper.Wait()

	var wg sync.WaitGroup
	for _, t := range pending {
		if !c.acquire(ctx) {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-c.revokeSem }()
			rctx, cancel := context.WithTimeout(ctx, c.callTimeout)
			defer cancel()
			_ = c.revoke(rctx, t) // counted and logged by revoke
		}()
	}
	wg.Wait()

	// Revocations started by evictions before Close run on their own
	// timeout; wait for them too, as long as ctx allows.
	done := make(chan struct{})
	go func() { c.revokes.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}

	st := c.Stats()
	switch {
	case st.Live > 0 && ctx.Err() != nil:
		return st, fmt.Errorf("%d tokens not revoked: %w", st.Live, ctx.Err())
	case st.Live > 0:
		return st, fmt.Errorf("%d tokens not revoked", st.Live)
	}
	return st, nil
}

// acquire takes a revocation slot, or reports false once ctx is done.
func (c *Cache) acquire(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	select {
	case c.revokeSem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}
