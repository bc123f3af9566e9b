package guacamoletest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

func TestDataEndpoints(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	alice := mustLogin(t, srv, "alice", "alice-pw")
	admin := mustLogin(t, srv, "admin", "admin-pw")

	tests := []struct {
		name       string
		token      string
		path       string
		wantStatus int
		wantBody   string // exact, if set
		wantPart   string // substring, if set
	}{
		{
			name:       "connection list",
			token:      alice,
			path:       "/api/session/data/default/connections",
			wantStatus: http.StatusOK,
			wantPart: `"1":{"name":"demo-ssh","identifier":"1","parentIdentifier":"ROOT",` +
				`"protocol":"ssh","attributes":{},"activeConnections":0,"lastActive":1767225600000}`,
		},
		{
			name:       "one connection",
			token:      alice,
			path:       "/api/session/data/default/connections/2",
			wantStatus: http.StatusOK,
			wantBody: `{"name":"demo-rdp","identifier":"2","parentIdentifier":"ROOT",` +
				`"protocol":"rdp","attributes":{},"activeConnections":0,"lastActive":1767225600000}`,
		},
		{
			name:       "connection parameters",
			token:      alice,
			path:       "/api/session/data/default/connections/1/parameters",
			wantStatus: http.StatusOK,
			wantBody:   `{"hostname":"10.0.0.10","port":"22"}`,
		},
		{
			name:       "unknown connection",
			token:      alice,
			path:       "/api/session/data/default/connections/99",
			wantStatus: http.StatusNotFound,
			wantBody: `{"message":"Not found: \"99\"","translatableMessage":` +
				`{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":"Not found: \"99\""}},` +
				`"statusCode":null,"expected":null,"patches":null,"type":"NOT_FOUND"}`,
		},
		{
			name:       "unknown data source",
			token:      alice,
			path:       "/api/session/data/mysql/connections",
			wantStatus: http.StatusNotFound,
			wantBody: `{"message":"Session not associated with authentication provider \"mysql\".",` +
				`"translatableMessage":{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":` +
				`"Session not associated with authentication provider \"mysql\"."}},` +
				`"statusCode":null,"expected":null,"patches":null,"type":"NOT_FOUND"}`,
		},
		{
			name:       "bad token beats unknown data source",
			token:      strings.Repeat("A", 64),
			path:       "/api/session/data/mysql/connections",
			wantStatus: http.StatusForbidden,
			wantBody:   bodyInvalidToken,
		},
		{
			name:       "self",
			token:      alice,
			path:       "/api/session/data/default/self",
			wantStatus: http.StatusOK,
			wantBody:   `{"username":"alice","attributes":{}}`,
		},
		{
			name:       "users as non-admin",
			token:      alice,
			path:       "/api/session/data/default/users",
			wantStatus: http.StatusForbidden,
			wantBody:   bodyObjectDenied,
		},
		{
			name:       "users as admin",
			token:      admin,
			path:       "/api/session/data/default/users",
			wantStatus: http.StatusOK,
			wantBody: `{"admin":{"username":"admin","attributes":{}},` +
				`"alice":{"username":"alice","attributes":{}}}`,
		},
		{
			name:       "connection tree",
			token:      alice,
			path:       "/api/session/data/default/connectionGroups/ROOT/tree",
			wantStatus: http.StatusOK,
			wantPart: `{"name":"ROOT","identifier":"ROOT","type":"ORGANIZATIONAL",` +
				`"activeConnections":0,"childConnections":[{"name":"demo-ssh"`,
		},
		{
			name:       "tunnels",
			token:      alice,
			path:       "/api/session/tunnels",
			wantStatus: http.StatusOK,
			wantBody:   `{}`,
		},
		{
			name:       "unknown resource",
			token:      alice,
			path:       "/api/session/data/default/nonsense",
			wantStatus: http.StatusNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, srv, tt.path, tt.token)
			if resp.status != tt.wantStatus {
				t.Errorf("got status %d; want %d (body %s)", resp.status, tt.wantStatus, resp.body)
			}
			if tt.wantBody != "" && resp.body != tt.wantBody {
				t.Errorf("got body\n%s\nwant\n%s", resp.body, tt.wantBody)
			}
			if tt.wantPart != "" && !strings.Contains(resp.body, tt.wantPart) {
				t.Errorf("got body\n%s\nwant it to contain\n%s", resp.body, tt.wantPart)
			}
		})
	}
}

func TestPermissionDenialKeepsToken(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")

	for i := range 3 {
		resp := get(t, srv, "/api/session/data/default/users", token)
		if resp.status != http.StatusForbidden || resp.body != bodyObjectDenied {
			t.Fatalf("attempt %d: got %d %s; want 403 %s", i+1, resp.status, resp.body, bodyObjectDenied)
		}
	}
	if resp := withToken(t, srv, http.MethodHead, "/api/session", token); resp.status != http.StatusNoContent {
		t.Errorf("HEAD after denials: got status %d; want 204", resp.status)
	}
	if got := srv.LiveTokens(); len(got) != 1 || got[0] != token {
		t.Errorf("got LiveTokens %v; want [%s]", got, token)
	}

	// Promoting the user takes effect on the open session.
	srv.SetUser("alice", guacamoletest.User{Password: "alice-pw", Admin: true})
	if resp := get(t, srv, "/api/session/data/default/users", token); resp.status != http.StatusOK {
		t.Errorf("after promotion: got status %d; want 200", resp.status)
	}
}

func TestCreateConnection(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")

	post := func(body string) response {
		t.Helper()
		req := newRequest(t, http.MethodPost, srv.URL+"/api/session/data/default/connections",
			strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Guacamole-Token", token)
		return do(t, req)
	}

	resp := post(`{"name":"new-vnc","parentIdentifier":"ROOT","protocol":"vnc",` +
		`"parameters":{"hostname":"10.0.0.30","port":"5900"},"attributes":{"max-connections":null}}`)
	want := `{"name":"new-vnc","identifier":"3","parentIdentifier":"ROOT","protocol":"vnc",` +
		`"parameters":{"hostname":"10.0.0.30","port":"5900"},"attributes":{"max-connections":null},` +
		`"activeConnections":0}`
	if resp.status != http.StatusOK || resp.body != want {
		t.Fatalf("create: got %d %s; want 200 %s", resp.status, resp.body, want)
	}

	resp = get(t, srv, "/api/session/data/default/connections/3", token)
	wantGet := `{"name":"new-vnc","identifier":"3","parentIdentifier":"ROOT","protocol":"vnc",` +
		`"attributes":{"max-connections":null},"activeConnections":0}`
	if resp.status != http.StatusOK || resp.body != wantGet {
		t.Errorf("read back: got %d %s; want 200 %s", resp.status, resp.body, wantGet)
	}
	resp = get(t, srv, "/api/session/data/default/connections/3/parameters", token)
	if want := `{"hostname":"10.0.0.30","port":"5900"}`; resp.body != want {
		t.Errorf("parameters: got %s; want %s", resp.body, want)
	}

	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantMsg    string
	}{
		{"empty body", "", http.StatusBadRequest, "Data must be submitted when creating objects."},
		{"null body", "null", http.StatusBadRequest, "Data must be submitted when creating objects."},
		{"malformed", "{", http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(tt.body)
			if resp.status != tt.wantStatus {
				t.Errorf("got status %d; want %d", resp.status, tt.wantStatus)
			}
			var e guacamoletest.APIError
			if err := json.Unmarshal([]byte(resp.body), &e); err != nil {
				t.Fatalf("decode %s: %v", resp.body, err)
			}
			if e.Type != guacamoletest.TypeBadRequest {
				t.Errorf("got type %q; want %q", e.Type, guacamoletest.TypeBadRequest)
			}
			if tt.wantMsg != "" && e.Message != tt.wantMsg {
				t.Errorf("got message %q; want %q", e.Message, tt.wantMsg)
			}
		})
	}
}

func TestRoutingOutsideAPI(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	if !strings.HasSuffix(srv.URL, "/guacamole") || !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Errorf("got URL %q; want http://127.0.0.1:<port>/guacamole", srv.URL)
	}
	root := strings.TrimSuffix(srv.URL, "/guacamole")

	tests := []struct {
		name       string
		method     string
		url        string
		wantStatus int
	}{
		{"landing page", http.MethodGet, srv.URL + "/", http.StatusOK},
		{"outside the base path", http.MethodPost, root + "/api/tokens", http.StatusNotFound},
		{"wrong method on tokens", http.MethodGet, srv.URL + "/api/tokens", http.StatusMethodNotAllowed},
		{"unknown api path", http.MethodGet, srv.URL + "/api/nothing", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(t, newRequest(t, tt.method, tt.url, nil))
			if resp.status != tt.wantStatus {
				t.Errorf("got status %d; want %d", resp.status, tt.wantStatus)
			}
		})
	}
}

func TestRootBasePath(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{BasePath: "/"})
	if strings.Count(srv.URL, "/") != 2 {
		t.Errorf("got URL %q; want no path", srv.URL)
	}
	mustLogin(t, srv, "alice", "alice-pw")
}

func TestObserve(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []*http.Request
	)
	srv := newServer(t, guacamoletest.Options{Observe: func(r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Clone(r.Context()))
	}})
	token := mustLogin(t, srv, "alice", "alice-pw")

	req := newRequest(t, http.MethodGet, srv.URL+"/api/session/data/default/self?token=q&x=1", nil)
	req.Header.Set("Guacamole-Token", token)
	do(t, req)

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("got %d observed requests; want 2", len(seen))
	}
	last := seen[1]
	if got := last.Header.Get("Guacamole-Token"); got != token {
		t.Errorf("got observed header %q; want the token", got)
	}
	if got := last.URL.Query().Get("x"); got != "1" {
		t.Errorf("got observed query x=%q; want 1", got)
	}
	if got := srv.Stats().Requests; got != 2 {
		t.Errorf("got Requests %d; want 2", got)
	}
}

func TestCloseTwice(t *testing.T) {
	srv := guacamoletest.NewServer(guacamoletest.Options{})
	srv.Close()
	srv.Close()
	if _, err := http.Get(srv.URL + "/"); err == nil {
		t.Errorf("got a response after Close; want a connection error")
	}
	guacamoletest.New(guacamoletest.Options{}).Close()
}

// TestConcurrentUse hammers one Server from 1,000 goroutines through
// ServeHTTP and checks that the counters add up.
func TestConcurrentUse(t *testing.T) {
	srv := guacamoletest.New(guacamoletest.Options{Users: testUsers(), DisableBan: true})
	seed := make([]string, 10)
	for i := range seed {
		seed[i] = serveLogin(t, srv, "alice", "alice-pw")
	}

	const workers = 1000
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := seed[i%len(seed)]
			var req *http.Request
			switch i % 5 {
			case 0:
				form := url.Values{"username": {"alice"}, "password": {"alice-pw"}}
				req = httptest.NewRequest(http.MethodPost, "/guacamole/api/tokens",
					strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			case 1:
				form := url.Values{"token": {tok}}
				req = httptest.NewRequest(http.MethodPost, "/guacamole/api/tokens",
					strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			case 2:
				req = httptest.NewRequest(http.MethodGet,
					"/guacamole/api/session/data/default/connections?token="+tok, nil)
			case 3:
				req = httptest.NewRequest(http.MethodHead, "/guacamole/api/session", nil)
				req.Header.Set("Guacamole-Token", tok)
			case 4:
				form := url.Values{"username": {"alice"}, "password": {"wrong"}}
				req = httptest.NewRequest(http.MethodPost, "/guacamole/api/tokens",
					strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			srv.ServeHTTP(httptest.NewRecorder(), req)
			_ = srv.Stats()
			_ = srv.LiveTokens()
		}()
	}
	wg.Wait()

	st := srv.Stats()
	want := guacamoletest.Stats{
		Logins:       len(seed) + workers/5,
		Reauths:      workers / 5,
		FailedLogins: workers / 5,
		LiveSessions: len(seed) + workers/5,
		Requests:     len(seed) + workers,
	}
	if st != want {
		t.Errorf("got Stats %+v; want %+v", st, want)
	}
	if got := len(srv.LiveTokens()); got != want.LiveSessions {
		t.Errorf("got %d live tokens; want %d", got, want.LiveSessions)
	}
}

// serveLogin logs in through ServeHTTP, without a network.
func serveLogin(t *testing.T, srv *guacamoletest.Server, user, pass string) string {
	t.Helper()
	form := url.Values{"username": {user}, "password": {pass}}
	req := httptest.NewRequest(http.MethodPost, "/guacamole/api/tokens", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	var res struct {
		AuthToken string `json:"authToken"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("login as %q: got %d %s; want 200 (%v)", user, rec.Code, rec.Body, err)
	}
	return res.AuthToken
}

func Example() {
	srv := guacamoletest.NewServer(guacamoletest.Options{
		Users: map[string]guacamoletest.User{"robot": {Password: "s3cret"}},
	})
	defer srv.Close()

	form := url.Values{"username": {"robot"}, "password": {"wrong"}}
	resp, err := http.PostForm(srv.URL+"/api/tokens", form)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()

	var e guacamoletest.APIError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, e.Type, e.Message)
	// Output: 403 INVALID_CREDENTIALS Permission Denied.
}
