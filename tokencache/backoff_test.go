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

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

func wrongPasswordIdentities(f *fixture, n int) []Identity {
	ids := make([]Identity, n)
	for i := range ids {
		s := strconv.Itoa(i)
		ids[i] = Identity{Name: "id" + s, Username: "user" + s, Password: "wrong"}
		f.emu.SetUser(ids[i].Username, guacamoletest.User{Password: "right" + s})
	}
	return ids
}

func TestFailedLoginBudgetIsSharedByIdentities(t *testing.T) {
	f := newFixture(t)
	ids := wrongPasswordIdentities(f, 6)
	var refused int
	for _, id := range ids {
		_, err := f.cache.Token(context.Background(), id)
		var bo *BackoffError
		switch {
		case errors.As(err, &bo) && errors.Is(err, ErrBudgetSpent):
			refused++
			if bo.RetryAfter <= 0 || bo.RetryAfter > DefaultBanWindow {
				t.Errorf("RetryAfter = %s; want within the window", bo.RetryAfter)
			}
		case !errors.Is(err, ErrInvalidCredentials):
			t.Fatalf("login of %s: %v", id.Name, err)
		}
	}
	if st := f.emu.Stats(); st.FailedLogins != DefaultBanMaxFailures || st.Banned != 0 {
		t.Fatalf("failed logins at Guacamole = %d, banned = %d; want %d and 0",
			st.FailedLogins, st.Banned, DefaultBanMaxFailures)
	}
	if refused != 2 {
		t.Errorf("logins held back = %d; want 2", refused)
	}

	// The right password of a fresh identity waits too, until the window
	// moves on; then it logs in.
	good := Identity{Name: "good", Username: reporting.Username, Password: reporting.Password}
	if _, err := f.cache.Token(context.Background(), good); !errors.Is(err, ErrBudgetSpent) {
		t.Fatalf("login while the budget is spent: %v; want ErrBudgetSpent", err)
	}
	f.clock.Advance(DefaultBanWindow)
	if _, err := f.cache.Token(context.Background(), good); err != nil {
		t.Fatalf("login after the window: %v", err)
	}
}

func TestConcurrentFailuresStayWithinTheBudget(t *testing.T) {
	f := newFixture(t)
	ids := wrongPasswordIdentities(f, 20)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() { _, _ = f.cache.Token(context.Background(), id) })
	}
	wg.Wait()
	if st := f.emu.Stats(); st.FailedLogins > DefaultBanMaxFailures || st.Banned != 0 {
		t.Errorf("failed logins = %d, banned = %d; want at most %d and 0",
			st.FailedLogins, st.Banned, DefaultBanMaxFailures)
	}
}

func TestSecondFactorStopsLoginsUntilCredentialsChange(t *testing.T) {
	var logins int
	var mu sync.Mutex
	mfa := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		logins++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"message":"Verification code required","translatableMessage":null,` +
			`"statusCode":null,"expected":[{"name":"guac-totp","type":"GUAC_TOTP_CODE"}],"patches":null,` +
			`"type":"INSUFFICIENT_CREDENTIALS"}`))
	}))
	t.Cleanup(mfa.Close)
	clock := newFakeClock()
	c := newCache(t, mfa.URL, clock)

	if _, err := c.Token(context.Background(), reporting); !errors.Is(err, ErrSecondFactor) {
		t.Fatalf("first login: %v; want ErrSecondFactor", err)
	}
	clock.Advance(24 * time.Hour)
	_, err := c.Token(context.Background(), reporting)
	var bo *BackoffError
	if !errors.As(err, &bo) || bo.RetryAfter != 0 || !errors.Is(err, ErrMisconfigured) {
		t.Fatalf("a day later: %v; want a BackoffError for a misconfigured identity", err)
	}
	if logins != 1 {
		t.Fatalf("logins sent = %d; want 1", logins)
	}
	if _, err := c.Token(context.Background(), rotated); !errors.Is(err, ErrSecondFactor) {
		t.Errorf("after the password changed: %v; want a new attempt", err)
	}
	if logins != 2 {
		t.Errorf("logins sent = %d; want 2", logins)
	}
}

func TestBanStopsAllLogins(t *testing.T) {
	f := newFixture(t)
	// Ban guacproxy's address the way a careless client would.
	c := NewClient(f.emu.URL, nil)
	for range 5 {
		_, _ = c.Login(context.Background(), "nobody", "wrong")
	}
	if _, err := f.cache.Token(context.Background(), reporting); !errors.Is(err, ErrBanned) {
		t.Fatalf("login while banned: %v; want ErrBanned", err)
	}
	if _, err := f.cache.Token(context.Background(), tool); !errors.As(err, new(*BackoffError)) {
		t.Fatalf("another identity while banned: %v; want a BackoffError", err)
	}
	if got := f.emu.Stats().Banned; got != 2 {
		t.Errorf("logins answered 429 = %d; want 2 (the client's fifth and guacproxy's one)", got)
	}
	f.clock.Advance(DefaultBanWindow + banMargin)
	if _, err := f.cache.Token(context.Background(), tool); err != nil {
		t.Errorf("login after the ban: %v", err)
	}
}

func TestChangedPasswordIsTriedAtOnce(t *testing.T) {
	f := newFixture(t)
	bad := Identity{Name: reporting.Name, Username: reporting.Username, Password: "wrong"}
	if _, err := f.cache.Token(context.Background(), bad); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatal(err)
	}
	if _, err := f.cache.Token(context.Background(), reporting); err != nil {
		t.Errorf("login with the corrected password: %v; want it tried without waiting", err)
	}
}

// More identities than the budget's places logging in at once: nothing has
// failed, so none is refused; they wait for a place instead.
func TestLoginsBeyondTheBudgetWaitForAPlace(t *testing.T) {
	clock := newFakeClock()
	emu := guacamoletest.New(guacamoletest.Options{Clock: clock.Now})
	var mu sync.Mutex
	inflight, peak := 0, 0
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // keeps logins overlapping; nothing is timed
		emu.ServeHTTP(w, r)
		mu.Lock()
		inflight--
		mu.Unlock()
	}))
	t.Cleanup(slow.Close)
	c := newCache(t, slow.URL+"/guacamole", clock)

	ids := make([]Identity, 3*DefaultBanMaxFailures)
	for i := range ids {
		s := strconv.Itoa(i)
		ids[i] = Identity{Name: "id" + s, Username: "user" + s, Password: "pw" + s}
		emu.SetUser(ids[i].Username, guacamoletest.User{Password: ids[i].Password})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() { _, errs[i] = c.Token(context.Background(), id) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("login of %s: %v", ids[i].Name, err)
		}
	}
	if peak > DefaultBanMaxFailures {
		t.Errorf("logins in flight at once = %d; want at most %d", peak, DefaultBanMaxFailures)
	}
}
