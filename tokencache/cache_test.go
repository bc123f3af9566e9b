package tokencache

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newFakeClock returns a clock tests move by hand. The cache and the
// emulator share one, so that both agree on how idle a token is.
func newFakeClock() *guacamoletest.Clock {
	return guacamoletest.NewClock(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC))
}

var (
	reporting = Identity{Name: "reporting", Username: "svc-reporting", Password: "reporting-secret-pw"}
	rotated   = Identity{Name: "reporting", Username: "svc-reporting", Password: "rotated-secret-pw"}
	tool      = Identity{Name: "tool", Username: "svc-tool", Password: "tool-secret-pw"}
)

type fixture struct {
	clock *guacamoletest.Clock
	emu   *guacamoletest.Server
	cache *Cache
}

// newFixture starts an emulator that knows reporting and tool, and a cache
// in front of it with a 60-minute session timeout and a 12-hour lifetime.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	clock := newFakeClock()
	emu := guacamoletest.NewServer(guacamoletest.Options{
		Users: map[string]guacamoletest.User{
			reporting.Username: {Password: reporting.Password},
			tool.Username:      {Password: tool.Password},
		},
		Clock: clock.Now,
	})
	t.Cleanup(emu.Close)
	return &fixture{clock: clock, emu: emu, cache: newCache(t, emu.URL, clock)}
}

func newCache(t *testing.T, url string, clock *guacamoletest.Clock) *Cache {
	t.Helper()
	c := New(Options{
		Client:        NewClient(url, nil),
		SweepInterval: -1,
		Clock:         clock.Now,
	})
	t.Cleanup(func() {
		if _, err := c.Close(context.Background()); err != nil && !errors.Is(err, errClosed) {
			t.Errorf("Close: %v", err)
		}
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
	return c
}

func (f *fixture) token(t *testing.T, id Identity) *Token {
	t.Helper()
	tok, err := f.cache.Token(context.Background(), id)
	if err != nil {
		t.Fatalf("Token(%s): %v", id.Name, err)
	}
	return tok
}

// use makes a REST call with tok, as a proxied request would, which resets
// the session's idle timer at Guacamole.
func (f *fixture) use(t *testing.T, tok *Token) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.emu.URL+"/api/session/data/default/self", nil)
	req.Header.Set("Guacamole-Token", tok.Value())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET self = %d; want 200", resp.StatusCode)
	}
}

func TestConcurrentColdRequestsLogInOnce(t *testing.T) {
	f := newFixture(t)
	const n = 1000
	var wg sync.WaitGroup
	tokens := make([]*Token, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			tokens[i], errs[i] = f.cache.Token(context.Background(), reporting)
		})
	}
	close(start)
	wg.Wait()

	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("request %d got a different token", i)
		}
	}
	if got := f.emu.Stats().Logins; got != 1 {
		t.Errorf("logins at Guacamole = %d; want 1", got)
	}
}

func TestWaiterHonoursItsContext(t *testing.T) {
	emu := guacamoletest.New(guacamoletest.Options{
		Users: map[string]guacamoletest.User{reporting.Username: {Password: reporting.Password}},
	})
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		emu.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)
	c := newCache(t, slow.URL+"/guacamole", newFakeClock())

	// The first caller starts the login and waits; a second caller with a
	// context that ends gives up without waiting for it.
	first := make(chan error, 1)
	go func() {
		_, err := c.Token(context.Background(), reporting)
		first <- err
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Token(ctx, reporting); !errors.Is(err, context.Canceled) {
		t.Errorf("Token with a cancelled context = %v; want context.Canceled", err)
	}

	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first caller: %v", err)
	}
	if got := emu.Stats().Logins; got != 1 {
		t.Errorf("logins = %d; want 1", got)
	}
}

func TestIdleTokenIsRevokedBeforeGuacamoleDropsIt(t *testing.T) {
	f := newFixture(t)
	first := f.token(t, reporting)
	idle := IdleLimit(DefaultSessionTimeout)
	if idle >= DefaultSessionTimeout-minIdleMargin+time.Second {
		t.Fatalf("IdleLimit(60m) = %s; want at least %s below it", idle, minIdleMargin)
	}

	f.clock.Advance(idle - time.Second)
	f.cache.Sweep()
	f.cache.revokes.Wait()
	if got := f.emu.Stats().Revocations; got != 0 {
		t.Fatalf("revocations before the idle limit = %d; want 0", got)
	}

	f.clock.Advance(time.Second)
	f.cache.Sweep()
	f.cache.revokes.Wait()
	st := f.emu.Stats()
	if st.Revocations != 1 || st.LiveSessions != 0 {
		t.Fatalf("after the idle limit: revocations=%d live=%d; want 1 and 0",
			st.Revocations, st.LiveSessions)
	}

	second := f.token(t, reporting)
	if second == first || second.Value() == first.Value() {
		t.Error("an evicted token was handed out again")
	}
	if got := f.emu.Stats().Logins; got != 2 {
		t.Errorf("logins = %d; want 2", got)
	}
}

func TestUseKeepsATokenUntilMaxLifetime(t *testing.T) {
	f := newFixture(t)
	first := f.token(t, reporting)

	// Used every 10 minutes, the token outlives many idle limits but not
	// the 12-hour maximum lifetime.
	for elapsed := time.Duration(0); elapsed < DefaultMaxLifetime-10*time.Minute; elapsed += 10 * time.Minute {
		f.clock.Advance(10 * time.Minute)
		f.cache.Sweep()
		got := f.token(t, reporting)
		if got != first {
			t.Fatalf("token replaced after %s of steady use", elapsed+10*time.Minute)
		}
		f.use(t, got)
	}
	f.clock.Advance(10 * time.Minute)
	f.cache.Sweep()
	f.cache.revokes.Wait()
	if got := f.emu.Stats().Revocations; got != 1 {
		t.Fatalf("revocations at max lifetime = %d; want 1", got)
	}
	if got := f.token(t, reporting); got == first {
		t.Error("the token was not rotated at its maximum lifetime")
	}
}

func TestDueTokenIsNotHandedOutBeforeTheSweep(t *testing.T) {
	f := newFixture(t)
	first := f.token(t, reporting)
	f.clock.Advance(DefaultSessionTimeout)
	if got := f.token(t, reporting); got == first {
		t.Fatal("a token past its idle limit was handed out")
	}
	f.cache.revokes.Wait()
	if got := f.emu.Stats().LiveSessions; got != 1 {
		t.Errorf("live sessions = %d; want 1 (the old one revoked)", got)
	}
}

func TestDead(t *testing.T) {
	tests := []struct {
		name     string
		breakTok func(f *fixture, tok *Token)
		wantDead bool
	}{
		{"guacamole restarted", func(f *fixture, _ *Token) { f.emu.Restart() }, true},
		{"guacamole revoked it", func(f *fixture, tok *Token) {
			_ = NewClient(f.emu.URL, nil).Revoke(context.Background(), tok.Value())
		}, true},
		{"token alive: a real permission denial", func(*fixture, *Token) {}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok := f.token(t, reporting)
			tt.breakTok(f, tok)

			dead, err := f.cache.Dead(context.Background(), tok)
			if err != nil {
				t.Fatalf("Dead: %v", err)
			}
			if dead != tt.wantDead {
				t.Fatalf("Dead = %t; want %t", dead, tt.wantDead)
			}
			next := f.token(t, reporting)
			if (next != tok) != tt.wantDead {
				t.Errorf("new token after Dead = %t; want %t", next != tok, tt.wantDead)
			}
			f.cache.revokes.Wait()
			if got := f.cache.Stats().Revoked; got != 0 {
				t.Errorf("revoked by the cache = %d; want 0 (a dead token needs none)", got)
			}
		})
	}
}

func TestWrongPasswordBacksOffWithoutTrippingTheBan(t *testing.T) {
	f := newFixture(t)
	bad := Identity{Name: "reporting", Username: reporting.Username, Password: "wrong"}

	_, err := f.cache.Token(context.Background(), bad)
	if !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("first login: %v; want ErrInvalidCredentials", err)
	}
	for range 20 {
		_, err = f.cache.Token(context.Background(), bad)
		var bo *BackoffError
		if !errors.As(err, &bo) || bo.RetryAfter < credentialBackoffMin-time.Second {
			t.Fatalf("repeated request: %v; want a BackoffError of at least %s", err, credentialBackoffMin)
		}
	}
	if got := f.emu.Stats().FailedLogins; got != 1 {
		t.Fatalf("failed logins at Guacamole = %d; want 1", got)
	}

	// Each retry waits longer: five failures take far longer than
	// Guacamole's five-minute ban window.
	var failures int
	start := f.clock.Now()
	for f.emu.Stats().FailedLogins < 5 {
		f.clock.Advance(time.Minute)
		if _, err := f.cache.Token(context.Background(), bad); !errors.As(err, new(*BackoffError)) {
			failures++
		}
	}
	if spent := f.clock.Now().Sub(start); spent < 10*time.Minute {
		t.Errorf("5 failed logins within %s; want them spread over more than 10m", spent)
	}
	if got := f.emu.Stats().Banned; got != 0 {
		t.Errorf("logins refused by the ban = %d; want 0", got)
	}

	// The right password works once the wait is over, and clears it.
	f.clock.Advance(credentialBackoffMax + time.Minute)
	if _, err := f.cache.Token(context.Background(), reporting); err != nil {
		t.Fatalf("login with the right password: %v", err)
	}
}

func TestChangedCredentialsReplaceTheToken(t *testing.T) {
	f := newFixture(t)
	first := f.token(t, reporting)
	f.emu.SetUser(rotated.Username, guacamoletest.User{Password: rotated.Password})

	if got := f.token(t, rotated); got == first {
		t.Fatal("the token of the old credentials was handed out")
	}
	f.cache.revokes.Wait()
	if got := f.emu.Stats().Revocations; got != 1 {
		t.Errorf("revocations = %d; want 1", got)
	}
}

func TestCloseRevokesEveryToken(t *testing.T) {
	f := newFixture(t)
	const n = 200
	ids := make([]Identity, n)
	for i := range ids {
		s := strconv.Itoa(i)
		ids[i] = Identity{Name: "id" + s, Username: "user" + s, Password: "password" + s}
		f.emu.SetUser(ids[i].Username, guacamoletest.User{Password: ids[i].Password})
	}
	for _, id := range ids {
		f.token(t, id)
	}
	if got := f.emu.Stats().LiveSessions; got != n {
		t.Fatalf("live sessions = %d; want %d", got, n)
	}

	st, err := f.cache.Close(context.Background())
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if st.Revoked != n || st.Live != 0 {
		t.Errorf("Close stats: revoked=%d live=%d; want %d and 0", st.Revoked, st.Live, n)
	}
	if got := f.emu.Stats().LiveSessions; got != 0 {
		t.Errorf("live sessions after Close = %d; want 0", got)
	}
	if _, err := f.cache.Token(context.Background(), ids[0]); err == nil {
		t.Error("Token after Close succeeded; want an error")
	}
}

func TestCloseCountsTokensAlreadyGone(t *testing.T) {
	f := newFixture(t)
	f.token(t, reporting)
	f.token(t, tool)
	f.emu.Restart()

	st, err := f.cache.Close(context.Background())
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if st.AlreadyGone != 2 || st.Revoked != 0 {
		t.Errorf("Close stats: gone=%d revoked=%d; want 2 and 0", st.AlreadyGone, st.Revoked)
	}
}

func TestLeasedTokenOutlivesEvictionUntilReleased(t *testing.T) {
	tests := []struct {
		name   string
		retire func(t *testing.T, f *fixture)
		next   Identity // the identity's account after retire
	}{
		{"idle", func(_ *testing.T, f *fixture) { f.clock.Advance(DefaultSessionTimeout) }, reporting},
		{"max lifetime", func(_ *testing.T, f *fixture) { f.clock.Advance(DefaultMaxLifetime) }, reporting},
		{"credentials changed", func(t *testing.T, f *fixture) {
			f.emu.SetUser(rotated.Username, guacamoletest.User{Password: rotated.Password})
			f.token(t, rotated)
		}, rotated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			leased, release, err := f.cache.Lease(context.Background(), reporting)
			if err != nil {
				t.Fatal(err)
			}
			_, release2, err := f.cache.Lease(context.Background(), reporting)
			if err != nil {
				t.Fatal(err)
			}

			tt.retire(t, f)
			f.cache.Sweep()
			f.cache.revokes.Wait()
			if got := f.cache.Stats().Revoked; got != 0 {
				t.Fatalf("revoked with tunnels open = %d; want 0", got)
			}
			if next := f.token(t, tt.next); next == leased {
				t.Fatal("a retired token was handed to a new request")
			}

			release()
			f.cache.revokes.Wait()
			if got := f.cache.Stats().Revoked; got != 0 {
				t.Fatalf("revoked with one tunnel still open = %d; want 0", got)
			}
			release2()
			f.cache.revokes.Wait()
			if got := f.cache.Stats().Revoked + f.cache.Stats().AlreadyGone; got != 1 {
				t.Errorf("revocations after the last tunnel closed = %d; want 1", got)
			}
		})
	}
}

// A request that began before a reload still carries the old account. It
// must neither log in with it nor push out the token of the new one.
func TestRegisteredAccountWinsOverAStaleCaller(t *testing.T) {
	f := newFixture(t)
	f.cache.SetIdentities([]Identity{reporting, tool})
	first := f.token(t, reporting)

	f.emu.SetUser(rotated.Username, guacamoletest.User{Password: rotated.Password})
	if retired := f.cache.SetIdentities([]Identity{rotated, tool}); len(retired) != 1 || retired[0] != reporting.Name {
		t.Fatalf("retired = %v; want [%s]", retired, reporting.Name)
	}
	stale := f.token(t, reporting) // the old password, from a request in flight
	if stale == first {
		t.Fatal("the token of the old account was handed out after the reload")
	}
	if again := f.token(t, rotated); again != stale {
		t.Error("the stale caller's token was replaced by the next request")
	}
	f.cache.revokes.Wait()
	if st := f.emu.Stats(); st.FailedLogins != 0 || st.Logins != 2 || st.LiveSessions != 1 {
		t.Errorf("failed=%d logins=%d live=%d; want 0, 2 and 1", st.FailedLogins, st.Logins, st.LiveSessions)
	}

	// Removing an identity retires its token too.
	if retired := f.cache.SetIdentities([]Identity{rotated}); len(retired) != 1 || retired[0] != tool.Name {
		t.Errorf("retired = %v; want [%s]", retired, tool.Name)
	}
}
