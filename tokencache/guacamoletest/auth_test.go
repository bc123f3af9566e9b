package guacamoletest_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

var tokenPattern = regexp.MustCompile(`^[0-9A-F]{64}$`)

func TestLoginShape(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})

	resp := login(t, srv, "alice", "alice-pw")
	if resp.status != http.StatusOK {
		t.Fatalf("got status %d; want 200 (body %s)", resp.status, resp.body)
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("got Content-Type %q; want %q", ct, "application/json")
	}

	// The body must be exactly the four fields, in Guacamole's order.
	head, rest, ok := strings.Cut(resp.body, `","username"`)
	token, found := strings.CutPrefix(head, `{"authToken":"`)
	if !ok || !found {
		t.Fatalf("got body %s; want authToken first, then username", resp.body)
	}
	if !tokenPattern.MatchString(token) {
		t.Errorf("got token %q; want 64 upper-case hex digits", token)
	}
	wantRest := `:"alice","dataSource":"default","availableDataSources":["default"]}`
	if rest != wantRest {
		t.Errorf("got body tail %s; want %s", rest, wantRest)
	}

	if other := mustLogin(t, srv, "alice", "alice-pw"); other == token {
		t.Errorf("second login returned the same token; want a new session")
	}
	if got := srv.Stats().Logins; got != 2 {
		t.Errorf("got Stats().Logins %d; want 2", got)
	}
}

func TestLoginDataSourceOption(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{DataSource: "postgresql"})
	resp := login(t, srv, "alice", "alice-pw")
	want := `,"username":"alice","dataSource":"postgresql","availableDataSources":["postgresql"]}`
	if !strings.HasSuffix(resp.body, want) {
		t.Errorf("got body %s; want suffix %s", resp.body, want)
	}
}

func TestLoginFailures(t *testing.T) {
	basic := func(s string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(s))
	}
	tests := []struct {
		name        string
		contentType string
		body        string
		auth        string
		wantStatus  int
		wantBody    string
	}{
		{
			name:        "wrong password",
			contentType: "application/x-www-form-urlencoded",
			body:        "username=alice&password=nope",
			wantStatus:  http.StatusForbidden,
			wantBody:    bodyBadLogin,
		},
		{
			name:        "unknown user",
			contentType: "application/x-www-form-urlencoded",
			body:        "username=mallory&password=alice-pw",
			wantStatus:  http.StatusForbidden,
			wantBody:    bodyBadLogin,
		},
		{
			name:        "missing password",
			contentType: "application/x-www-form-urlencoded",
			body:        "username=alice",
			wantStatus:  http.StatusForbidden,
			wantBody:    bodyBadLogin,
		},
		{
			name:        "empty form",
			contentType: "application/x-www-form-urlencoded",
			wantStatus:  http.StatusForbidden,
			wantBody:    bodyBadLogin,
		},
		{
			name:        "form with charset",
			contentType: "application/x-www-form-urlencoded; charset=UTF-8",
			body:        "username=alice&password=alice-pw",
			wantStatus:  http.StatusOK,
		},
		{
			name:        "json body",
			contentType: "application/json",
			body:        `{"username":"alice","password":"alice-pw"}`,
			wantStatus:  http.StatusInternalServerError,
			wantBody:    bodyInternal,
		},
		{
			name:       "no content type",
			wantStatus: http.StatusInternalServerError,
			wantBody:   bodyInternal,
		},
		{
			name:        "basic auth",
			contentType: "application/x-www-form-urlencoded",
			auth:        basic("alice:alice-pw"),
			wantStatus:  http.StatusOK,
		},
		{
			name:        "form fields beat basic auth",
			contentType: "application/x-www-form-urlencoded",
			body:        "username=alice&password=nope",
			auth:        basic("alice:alice-pw"),
			wantStatus:  http.StatusForbidden,
			wantBody:    bodyBadLogin,
		},
		{
			name:        "basic auth with wrong password",
			contentType: "application/x-www-form-urlencoded",
			auth:        basic("alice:nope"),
			wantStatus:  http.StatusForbidden,
			wantBody:    bodyBadLogin,
		},
		{
			name:        "undecodable basic auth",
			contentType: "application/x-www-form-urlencoded",
			auth:        "Basic !!!",
			wantStatus:  http.StatusInternalServerError,
			wantBody:    bodyInternal,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, guacamoletest.Options{})
			req := newRequest(t, http.MethodPost, srv.URL+"/api/tokens", strings.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp := do(t, req)
			if resp.status != tt.wantStatus {
				t.Errorf("got status %d; want %d (body %s)", resp.status, tt.wantStatus, resp.body)
			}
			if tt.wantBody != "" && resp.body != tt.wantBody {
				t.Errorf("got body\n%s\nwant\n%s", resp.body, tt.wantBody)
			}
			if tt.wantBody != "" {
				if ct := resp.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("got Content-Type %q; want application/json", ct)
				}
			}
		})
	}
}

func TestReauthReturnsSameToken(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{
		Clock:          clock.Now,
		SessionTimeout: 60 * time.Minute,
	})
	token := mustLogin(t, srv, "alice", "alice-pw")

	tests := []struct {
		name string
		form url.Values
	}{
		{"token only", url.Values{"token": {token}}},
		{"credentials ignored", url.Values{"token": {token}, "username": {"admin"}, "password": {"wrong"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each re-auth must reset the idle timer, so after 50 minutes
			// twice over the token is still alive.
			clock.Advance(50 * time.Minute)
			resp := postForm(t, srv, tt.form)
			if resp.status != http.StatusOK {
				t.Fatalf("got status %d; want 200 (body %s)", resp.status, resp.body)
			}
			want := `{"authToken":"` + token + `","username":"alice",` +
				`"dataSource":"default","availableDataSources":["default"]}`
			if resp.body != want {
				t.Errorf("got body %s; want %s", resp.body, want)
			}
		})
	}

	st := srv.Stats()
	if st.Logins != 1 || st.Reauths != 2 || st.LiveSessions != 1 {
		t.Errorf("got Logins %d, Reauths %d, LiveSessions %d; want 1, 2, 1",
			st.Logins, st.Reauths, st.LiveSessions)
	}
}

func TestReauthWithDeadTokenIsFreshLogin(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now, SessionTimeout: time.Minute})
	old := mustLogin(t, srv, "alice", "alice-pw")
	clock.Advance(time.Minute)

	resp := postForm(t, srv, url.Values{
		"token": {old}, "username": {"alice"}, "password": {"alice-pw"},
	})
	if resp.status != http.StatusOK {
		t.Fatalf("got status %d; want 200 (body %s)", resp.status, resp.body)
	}
	if strings.Contains(resp.body, old) {
		t.Errorf("got the expired token back; want a new one")
	}
	if st := srv.Stats(); st.Logins != 2 || st.Reauths != 0 {
		t.Errorf("got Logins %d, Reauths %d; want 2, 0", st.Logins, st.Reauths)
	}
}

func TestTokenSources(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	good := mustLogin(t, srv, "alice", "alice-pw")
	bad := strings.Repeat("0", 64)

	tests := []struct {
		name       string
		header     string
		query      string
		wantStatus int
	}{
		{"header only", good, "", http.StatusOK},
		{"query only", "", "token=" + good, http.StatusOK},
		{"bad header beats good query", bad, "token=" + good, http.StatusForbidden},
		{"good header beats bad query", good, "token=" + bad, http.StatusOK},
		{"first query value wins", "", "token=" + good + "&token=" + bad, http.StatusOK},
		{"later good query value ignored", "", "token=" + bad + "&token=" + good, http.StatusForbidden},
		{"empty query value", "", "token=", http.StatusForbidden},
		{"no token", "", "", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := srv.URL + "/api/session/data/default/self"
			if tt.query != "" {
				u += "?" + tt.query
			}
			req := newRequest(t, http.MethodGet, u, nil)
			if tt.header != "" {
				req.Header.Set("Guacamole-Token", tt.header)
			}
			resp := do(t, req)
			if resp.status != tt.wantStatus {
				t.Errorf("got status %d; want %d (body %s)", resp.status, tt.wantStatus, resp.body)
			}
			if tt.wantStatus == http.StatusForbidden && resp.body != bodyInvalidToken {
				t.Errorf("got body\n%s\nwant\n%s", resp.body, bodyInvalidToken)
			}
		})
	}

	// A bad header sent alongside a good query must not have ended the
	// good session.
	if resp := get(t, srv, "/api/session/data/default/self", good); resp.status != http.StatusOK {
		t.Errorf("after the table: got status %d; want 200", resp.status)
	}
}

func TestDeleteToken(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")
	other := mustLogin(t, srv, "alice", "alice-pw")

	steps := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"revoke", http.MethodDelete, "/api/tokens/" + token, http.StatusNoContent, ""},
		{"revoke again", http.MethodDelete, "/api/tokens/" + token, http.StatusNotFound, bodyNoSuchToken},
		{"revoked token unusable", http.MethodGet, "/api/session/data/default/self?token=" + token,
			http.StatusForbidden, bodyInvalidToken},
		{"other session untouched", http.MethodGet, "/api/session/data/default/self?token=" + other,
			http.StatusOK, ""},
		{"logout via session", http.MethodDelete, "/api/session?token=" + other, http.StatusNoContent, ""},
		{"logout again", http.MethodDelete, "/api/session?token=" + other, http.StatusForbidden, bodyInvalidToken},
		{"revoke after logout", http.MethodDelete, "/api/tokens/" + other, http.StatusNotFound, bodyNoSuchToken},
	}
	for _, st := range steps {
		resp := do(t, newRequest(t, st.method, srv.URL+st.path, nil))
		if resp.status != st.wantStatus {
			t.Errorf("%s: got status %d; want %d (body %s)", st.name, resp.status, st.wantStatus, resp.body)
		}
		if st.wantBody != "" && resp.body != st.wantBody {
			t.Errorf("%s: got body\n%s\nwant\n%s", st.name, resp.body, st.wantBody)
		}
	}

	if st := srv.Stats(); st.Revocations != 2 || st.LiveSessions != 0 {
		t.Errorf("got Revocations %d, LiveSessions %d; want 2, 0", st.Revocations, st.LiveSessions)
	}
}

func TestHeadSessionDoesNotResetIdleTimer(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now, SessionTimeout: 10 * time.Minute})
	headToken := mustLogin(t, srv, "alice", "alice-pw")
	getToken := mustLogin(t, srv, "alice", "alice-pw")

	clock.Advance(9 * time.Minute)
	if resp := withToken(t, srv, http.MethodHead, "/api/session", headToken); resp.status != http.StatusNoContent {
		t.Fatalf("HEAD at 9m: got status %d; want 204", resp.status)
	}
	if resp := get(t, srv, "/api/session/tunnels", getToken); resp.status != http.StatusOK || resp.body != "{}" {
		t.Fatalf("GET tunnels at 9m: got %d %s; want 200 {}", resp.status, resp.body)
	}

	clock.Advance(time.Minute)
	resp := withToken(t, srv, http.MethodHead, "/api/session", headToken)
	if resp.status != http.StatusForbidden {
		t.Errorf("HEAD at 10m: got status %d; want 403 (HEAD must not have reset the timer)", resp.status)
	}
	resp = withToken(t, srv, http.MethodHead, "/api/session", getToken)
	if resp.status != http.StatusNoContent {
		t.Errorf("HEAD of the GET-refreshed token: got status %d; want 204", resp.status)
	}
}

func TestIdleExpiry(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now, SessionTimeout: 10 * time.Minute})
	busy := mustLogin(t, srv, "alice", "alice-pw")
	idle := mustLogin(t, srv, "alice", "alice-pw")

	clock.Advance(9 * time.Minute)
	if resp := get(t, srv, "/api/session/data/default/connections", busy); resp.status != http.StatusOK {
		t.Fatalf("use at 9m: got status %d; want 200", resp.status)
	}
	clock.Advance(time.Minute)

	// The idle token reached exactly the timeout: it is gone, with or
	// without the sweep.
	if got := srv.LiveTokens(); len(got) != 1 || got[0] != busy {
		t.Errorf("got LiveTokens %v; want only the busy token", got)
	}
	srv.ExpireIdle()
	if got := srv.Stats().LiveSessions; got != 1 {
		t.Errorf("after ExpireIdle: got LiveSessions %d; want 1", got)
	}
	resp := get(t, srv, "/api/session/data/default/connections", idle)
	if resp.status != http.StatusForbidden || resp.body != bodyInvalidToken {
		t.Errorf("idle token: got %d %s; want 403 %s", resp.status, resp.body, bodyInvalidToken)
	}
	if resp := get(t, srv, "/api/session/data/default/connections", busy); resp.status != http.StatusOK {
		t.Errorf("busy token: got status %d; want 200", resp.status)
	}
}

func TestExpireIdleWithoutAccess(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now})
	mustLogin(t, srv, "alice", "alice-pw")

	clock.Advance(59 * time.Minute)
	srv.ExpireIdle()
	if got := len(srv.LiveTokens()); got != 1 {
		t.Errorf("at 59m: got %d live tokens; want 1 (default timeout is 60m)", got)
	}
	clock.Advance(time.Minute)
	srv.ExpireIdle()
	if got := len(srv.LiveTokens()); got != 0 {
		t.Errorf("at 60m: got %d live tokens; want 0", got)
	}
}

func TestRestartDropsSessionsAndBans(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{BanMaxFailures: 2})
	token := mustLogin(t, srv, "alice", "alice-pw")
	login(t, srv, "alice", "nope")
	if resp := login(t, srv, "alice", "nope"); resp.status != http.StatusTooManyRequests {
		t.Fatalf("setting up the ban: got status %d; want 429", resp.status)
	}

	srv.Restart()

	if got := srv.LiveTokens(); len(got) != 0 {
		t.Errorf("got LiveTokens %v after Restart; want none", got)
	}
	resp := get(t, srv, "/api/session/data/default/self", token)
	if resp.status != http.StatusForbidden || resp.body != bodyInvalidToken {
		t.Errorf("old token: got %d %s; want 403 %s", resp.status, resp.body, bodyInvalidToken)
	}
	if resp := postForm(t, srv, url.Values{"token": {token}}); resp.status != http.StatusForbidden {
		t.Errorf("re-auth with old token: got status %d; want 403", resp.status)
	}
	if resp := login(t, srv, "alice", "alice-pw"); resp.status != http.StatusOK {
		t.Errorf("login after Restart: got status %d; want 200 (ban state must be gone)", resp.status)
	}
}

func TestSetUserRotatesPassword(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")

	srv.SetUser("alice", guacamoletest.User{Password: "new-pw"})
	if resp := login(t, srv, "alice", "alice-pw"); resp.status != http.StatusForbidden {
		t.Errorf("old password: got status %d; want 403", resp.status)
	}
	if resp := login(t, srv, "alice", "new-pw"); resp.status != http.StatusOK {
		t.Errorf("new password: got status %d; want 200", resp.status)
	}
	if resp := get(t, srv, "/api/session/data/default/self", token); resp.status != http.StatusOK {
		t.Errorf("session from before the rotation: got status %d; want 200", resp.status)
	}
}
