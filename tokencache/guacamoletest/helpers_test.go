package guacamoletest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// newFakeClock returns a hand-moved clock for Options.Clock.
func newFakeClock() *guacamoletest.Clock {
	return guacamoletest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

// testUsers are the accounts most tests log in with.
func testUsers() map[string]guacamoletest.User {
	return map[string]guacamoletest.User{
		"alice": {Password: "alice-pw"},
		"admin": {Password: "admin-pw", Admin: true},
	}
}

// newServer starts a listening emulator that is closed when the test ends.
func newServer(t *testing.T, opts guacamoletest.Options) *guacamoletest.Server {
	t.Helper()
	if opts.Users == nil {
		opts.Users = testUsers()
	}
	srv := guacamoletest.NewServer(opts)
	t.Cleanup(srv.Close)
	return srv
}

// response is what a test needs from an HTTP answer.
type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s %s: %v", req.Method, req.URL.Path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func newRequest(t *testing.T, method, rawURL string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		t.Fatalf("build %s %s: %v", method, rawURL, err)
	}
	return req
}

// postForm posts form to {base}/api/tokens.
func postForm(t *testing.T, srv *guacamoletest.Server, form url.Values) response {
	t.Helper()
	req := newRequest(t, http.MethodPost, srv.URL+"/api/tokens",
		strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, req)
}

func login(t *testing.T, srv *guacamoletest.Server, user, pass string) response {
	t.Helper()
	return postForm(t, srv, url.Values{"username": {user}, "password": {pass}})
}

// mustLogin logs in and returns the token, failing the test otherwise.
func mustLogin(t *testing.T, srv *guacamoletest.Server, user, pass string) string {
	t.Helper()
	resp := login(t, srv, user, pass)
	if resp.status != http.StatusOK {
		t.Fatalf("login as %q: got status %d; want 200 (body %s)", user, resp.status, resp.body)
	}
	var res struct {
		AuthToken string `json:"authToken"`
	}
	if err := json.Unmarshal([]byte(resp.body), &res); err != nil {
		t.Fatalf("decode login reply %s: %v", resp.body, err)
	}
	return res.AuthToken
}

// get calls GET {base}{path} with the token in the Guacamole-Token header.
func get(t *testing.T, srv *guacamoletest.Server, path, token string) response {
	t.Helper()
	req := newRequest(t, http.MethodGet, srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Guacamole-Token", token)
	}
	return do(t, req)
}

func withToken(t *testing.T, srv *guacamoletest.Server, method, path, token string) response {
	t.Helper()
	req := newRequest(t, method, srv.URL+path, nil)
	req.Header.Set("Guacamole-Token", token)
	return do(t, req)
}

// Exact bodies Guacamole sends for the errors the tests provoke.
const (
	bodyInvalidToken = `{"message":"Permission Denied.","translatableMessage":` +
		`{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":"Permission Denied."}},` +
		`"statusCode":null,"expected":null,"patches":null,"type":"PERMISSION_DENIED"}`
	bodyBadLogin = `{"message":"Permission Denied.","translatableMessage":` +
		`{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":"Permission Denied."}},` +
		`"statusCode":null,"expected":[{"name":"username","type":"USERNAME"},` +
		`{"name":"password","type":"PASSWORD"}],"patches":null,"type":"INVALID_CREDENTIALS"}`
	bodyBanned = `{"message":"Too many failed authentication attempts.","translatableMessage":` +
		`{"key":"LOGIN.ERROR_TOO_MANY_ATTEMPTS","variables":null},` +
		`"statusCode":null,"expected":null,"patches":null,"type":"BAD_REQUEST"}`
	bodyObjectDenied = `{"message":"Permission denied.","translatableMessage":` +
		`{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":"Permission denied."}},` +
		`"statusCode":null,"expected":null,"patches":null,"type":"PERMISSION_DENIED"}`
	bodyNoSuchToken = `{"message":"No such token.","translatableMessage":` +
		`{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":"No such token."}},` +
		`"statusCode":null,"expected":null,"patches":null,"type":"NOT_FOUND"}`
	bodyInternal = `{"message":"Unexpected internal error","translatableMessage":` +
		`{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":"Unexpected internal error"}},` +
		`"statusCode":null,"expected":null,"patches":null,"type":"INTERNAL_ERROR"}`
)
