package guacamoletest_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

func TestBanAfterMaxFailures(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})

	// The attempt that reaches the limit is already answered 429, because
	// the ban extension re-checks while recording the failure.
	wantStatuses := []int{403, 403, 403, 403, 429}
	for i, want := range wantStatuses {
		resp := login(t, srv, "alice", "nope")
		if resp.status != want {
			t.Errorf("failure %d: got status %d; want %d", i+1, resp.status, want)
		}
	}

	resp := login(t, srv, "alice", "alice-pw")
	if resp.status != http.StatusTooManyRequests {
		t.Errorf("correct password while banned: got status %d; want 429", resp.status)
	}
	if resp.body != bodyBanned {
		t.Errorf("got body\n%s\nwant\n%s", resp.body, bodyBanned)
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("got Content-Type %q; want application/json", ct)
	}

	st := srv.Stats()
	if st.FailedLogins != 5 || st.Banned != 2 || st.Logins != 0 {
		t.Errorf("got FailedLogins %d, Banned %d, Logins %d; want 5, 2, 0",
			st.FailedLogins, st.Banned, st.Logins)
	}
}

func TestBanBlocksReauth(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{BanMaxFailures: 1})
	token := mustLogin(t, srv, "alice", "alice-pw")
	login(t, srv, "alice", "nope")

	if resp := postForm(t, srv, url.Values{"token": {token}}); resp.status != http.StatusTooManyRequests {
		t.Errorf("re-auth while banned: got status %d; want 429", resp.status)
	}
	// The ban concerns logins only; the token itself still works.
	if resp := get(t, srv, "/api/session/data/default/self", token); resp.status != http.StatusOK {
		t.Errorf("REST call while banned: got status %d; want 200", resp.status)
	}
}

func TestBanIsPerAddress(t *testing.T) {
	srv := guacamoletest.New(guacamoletest.Options{Users: testUsers(), BanMaxFailures: 2})
	serve := func(addr, body string) int {
		req := httptest.NewRequest(http.MethodPost, "/guacamole/api/tokens", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec.Code
	}

	serve("10.1.1.1:4000", "username=alice&password=nope")
	serve("10.1.1.1:4001", "username=alice&password=nope")
	if got := serve("10.1.1.1:4002", "username=alice&password=alice-pw"); got != http.StatusTooManyRequests {
		t.Errorf("banned address, other port: got status %d; want 429", got)
	}
	if got := serve("10.2.2.2:4000", "username=alice&password=alice-pw"); got != http.StatusOK {
		t.Errorf("other address: got status %d; want 200", got)
	}
}

func TestBanLiftsAfterDuration(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{
		Clock:       clock.Now,
		BanDuration: 300 * time.Second,
		BanWindow:   300 * time.Second,
	})
	for range 5 {
		clock.Advance(10 * time.Second)
		login(t, srv, "alice", "nope")
	}

	// Attempts while banned do not count as failures, so they do not push
	// the end of the ban back.
	clock.Advance(150 * time.Second)
	if resp := login(t, srv, "alice", "alice-pw"); resp.status != http.StatusTooManyRequests {
		t.Fatalf("150s after the last failure: got status %d; want 429", resp.status)
	}
	clock.Advance(150 * time.Second)
	if resp := login(t, srv, "alice", "alice-pw"); resp.status != http.StatusTooManyRequests {
		t.Fatalf("exactly BanDuration after the last failure: got status %d; want 429", resp.status)
	}
	clock.Advance(time.Nanosecond)
	if resp := login(t, srv, "alice", "alice-pw"); resp.status != http.StatusOK {
		t.Fatalf("just past BanDuration: got status %d; want 200", resp.status)
	}

	// The old failures are forgotten: it takes a full new run to ban again.
	for i := range 4 {
		if resp := login(t, srv, "alice", "nope"); resp.status != http.StatusForbidden {
			t.Errorf("new failure %d: got status %d; want 403", i+1, resp.status)
		}
	}
}

func TestBanWindow(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now, BanWindow: time.Minute})

	// Failures spaced wider than the window never accumulate.
	for i := range 10 {
		resp := login(t, srv, "alice", "nope")
		if resp.status != http.StatusForbidden {
			t.Fatalf("spaced failure %d: got status %d; want 403", i+1, resp.status)
		}
		clock.Advance(time.Minute + time.Second)
	}
}

func TestBanCounting(t *testing.T) {
	bad := strings.Repeat("F", 64)
	tests := []struct {
		name string
		// run performs the attempts under test against a server whose ban
		// triggers at 3 failures.
		run        func(t *testing.T, srv *guacamoletest.Server)
		wantFailed int
		wantBanned bool
	}{
		{
			name: "success does not reset the count",
			run: func(t *testing.T, srv *guacamoletest.Server) {
				login(t, srv, "alice", "nope")
				login(t, srv, "alice", "nope")
				mustLogin(t, srv, "alice", "alice-pw")
				login(t, srv, "alice", "nope")
			},
			wantFailed: 3,
			wantBanned: true,
		},
		{
			name: "re-auth with dead token and no credentials counts",
			run: func(t *testing.T, srv *guacamoletest.Server) {
				for range 3 {
					postForm(t, srv, url.Values{"token": {bad}})
				}
			},
			wantFailed: 3,
			wantBanned: true,
		},
		{
			name: "REST calls with a bad token do not count",
			run: func(t *testing.T, srv *guacamoletest.Server) {
				for range 10 {
					get(t, srv, "/api/session/data/default/connections", bad)
					withToken(t, srv, http.MethodHead, "/api/session", bad)
					withToken(t, srv, http.MethodDelete, "/api/tokens/"+bad, bad)
				}
			},
		},
		{
			name: "empty login requests do not count",
			run: func(t *testing.T, srv *guacamoletest.Server) {
				for range 5 {
					postForm(t, srv, url.Values{})
				}
			},
		},
		{
			name: "wrong content type does not count",
			run: func(t *testing.T, srv *guacamoletest.Server) {
				for range 5 {
					req := newRequest(t, http.MethodPost, srv.URL+"/api/tokens",
						strings.NewReader("username=alice&password=nope"))
					req.Header.Set("Content-Type", "text/plain")
					do(t, req)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, guacamoletest.Options{BanMaxFailures: 3})
			tt.run(t, srv)

			if got := srv.Stats().FailedLogins; got != tt.wantFailed {
				t.Errorf("got FailedLogins %d; want %d", got, tt.wantFailed)
			}
			resp := login(t, srv, "alice", "alice-pw")
			if banned := resp.status == http.StatusTooManyRequests; banned != tt.wantBanned {
				t.Errorf("got status %d for a correct login; want banned=%v", resp.status, tt.wantBanned)
			}
		})
	}
}

func TestDisableBan(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{DisableBan: true})
	for range 20 {
		login(t, srv, "alice", "nope")
	}
	if resp := login(t, srv, "alice", "alice-pw"); resp.status != http.StatusOK {
		t.Errorf("got status %d; want 200 with the ban disabled", resp.status)
	}
	if st := srv.Stats(); st.FailedLogins != 20 || st.Banned != 0 {
		t.Errorf("got FailedLogins %d, Banned %d; want 20, 0", st.FailedLogins, st.Banned)
	}
}
