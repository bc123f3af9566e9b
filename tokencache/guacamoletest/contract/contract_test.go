// Package contract_test states how Apache Guacamole's REST tokens behave, as
// checks over plain net/http that run against any Guacamole base URL.
//
// The checks always run against the in-process emulator from package
// guacamoletest. They also run against a real Guacamole web application when
// GUACPROXY_TEST_GUACAMOLE_URL names one (.ci/guacamole.sh start prints the
// variables for a local instance):
//
//	GUACPROXY_TEST_GUACAMOLE_URL      base URL including the context path,
//	                                  e.g. http://127.0.0.1:18081/guacamole
//	GUACPROXY_TEST_GUACAMOLE_USERS    at least two test accounts,
//	                                  "name:password,name:password"
//	GUACPROXY_TEST_GUACAMOLE_RESTART  shell command that restarts the web
//	                                  application and waits until it is ready;
//	                                  restart and ban checks are skipped
//	                                  without it
//	GUACPROXY_TEST_GUACAMOLE_BAN      "1" when the ban extension is installed
//	GUACPROXY_TEST_GUACAMOLE_DATASOURCE
//	                                  data source of the test accounts;
//	                                  default "default" (user-mapping.xml)
//
// The real server must run with api-session-timeout 1. Its two idle checks
// run in parallel and sleep for about two and a half minutes (with -parallel
// 1 they take twice that); -short skips them. The ban check
// runs last, because a ban locks 127.0.0.1 out of logging in for five
// minutes; it restarts the web application before and after itself so that
// it starts from a clean count and leaves no ban behind.
package contract_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

const (
	envURL        = "GUACPROXY_TEST_GUACAMOLE_URL"
	envUsers      = "GUACPROXY_TEST_GUACAMOLE_USERS"
	envRestart    = "GUACPROXY_TEST_GUACAMOLE_RESTART"
	envBan        = "GUACPROXY_TEST_GUACAMOLE_BAN"
	envDataSource = "GUACPROXY_TEST_GUACAMOLE_DATASOURCE"
)

// sessionTimeout is the api-session-timeout every target runs with.
const sessionTimeout = time.Minute

// idleSpan is how long the idle checks let pass. Guacamole drops sessions
// idle for sessionTimeout from a task that runs once a minute, so an unused
// token is gone within two minutes; the rest is margin.
const idleSpan = 2*time.Minute + 15*time.Second

// useEvery is how often the idle checks touch a token that must survive.
const useEvery = 30 * time.Second

// banLimit is how many failed logins from one address trigger the ban
// extension (its default).
const banLimit = 5

var tokenPattern = regexp.MustCompile(`^[0-9A-F]{64}$`)

// account is a username and password the target accepts.
type account struct {
	name, password string
}

// target is one Guacamole deployment the contract is checked against.
type target struct {
	base       string // base URL including the context path
	dataSource string // data source that authenticates the accounts
	users      []account
	client     *http.Client

	// advance lets d pass without touching any token: the emulator moves its
	// fake clock, a real server is waited for.
	advance func(t *testing.T, d time.Duration)
	// restart restarts the web application, losing all sessions and ban
	// state. Nil if the target cannot be restarted.
	restart func(t *testing.T)
	// ban reports whether the ban extension is present.
	ban bool
}

// provider returns the target for one check. The emulator hands every check
// a fresh server with its own clock; a real server is shared by all checks,
// which is why the order of the groups in runContract matters.
type provider func(t *testing.T) *target

func TestContract(t *testing.T) {
	t.Run("emulator", func(t *testing.T) {
		runContract(t, newEmulator)
	})
	t.Run("real", func(t *testing.T) {
		real, reason := realProvider()
		if real == nil {
			t.Skip(reason)
		}
		runContract(t, real)
	})
}

// runContract runs every check against the targets p provides. Groups run
// one after another: the idle checks must not see a restart, and the ban
// check must come after every other login.
func runContract(t *testing.T, p provider) {
	t.Run("rest", func(t *testing.T) {
		for _, c := range restChecks {
			t.Run(c.name, func(t *testing.T) { c.check(t, p(t)) })
		}
	})
	t.Run("idle", func(t *testing.T) {
		for _, c := range idleChecks {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.check(t, p(t))
			})
		}
	})
	t.Run("restart", func(t *testing.T) { checkRestartLosesTokens(t, p(t)) })
	t.Run("ban", func(t *testing.T) { checkBan(t, p(t)) })
}

type check struct {
	name  string
	check func(t *testing.T, tg *target)
}

var restChecks = []check{
	{"login_form", checkLoginForm},
	{"login_wrong_password", checkWrongPassword},
	{"login_json_is_not_a_login", checkJSONLogin},
	{"token_in_header_or_query", checkTokenPlacement},
	{"header_beats_query", checkHeaderWins},
	{"unknown_token", checkUnknownToken},
	{"reauth_keeps_token", checkReauth},
	{"reauth_unknown_token", checkReauthUnknownToken},
	{"revoke", checkRevoke},
	{"delete_session", checkDeleteSession},
	{"head_session", checkHeadSession},
	{"unknown_data_source", checkUnknownDataSource},
}

var idleChecks = []check{
	{"unused_token_expires", checkUnusedTokenExpires},
	{"used_token_survives", checkUsedTokenSurvives},
}

// Checks.

func checkLoginForm(t *testing.T, tg *target) {
	u := tg.users[0]
	r := tg.postTokens(t, url.Values{"username": {u.name}, "password": {u.password}})
	if r.status != http.StatusOK {
		t.Fatalf("login: status = %d; want 200 (body %s)", r.status, r.body)
	}
	checkJSONType(t, r)

	fields := decodeObject(t, r)
	got := slices.Sorted(maps.Keys(fields))
	want := []string{"authToken", "availableDataSources", "dataSource", "username"}
	if !slices.Equal(got, want) {
		t.Errorf("login fields = %q; want %q", got, want)
	}

	var body struct {
		AuthToken            string   `json:"authToken"`
		Username             string   `json:"username"`
		DataSource           string   `json:"dataSource"`
		AvailableDataSources []string `json:"availableDataSources"`
	}
	mustUnmarshal(t, r.body, &body)
	tg.revokeLater(t, body.AuthToken)
	if !tokenPattern.MatchString(body.AuthToken) {
		t.Errorf("authToken = %q; want 64 upper-case hex digits", redact(body.AuthToken))
	}
	if body.Username != u.name {
		t.Errorf("username = %q; want %q", body.Username, u.name)
	}
	if body.DataSource != tg.dataSource {
		t.Errorf("dataSource = %q; want %q", body.DataSource, tg.dataSource)
	}
	if !slices.Contains(body.AvailableDataSources, tg.dataSource) {
		t.Errorf("availableDataSources = %q; want it to contain %q",
			body.AvailableDataSources, tg.dataSource)
	}

	// Two logins of one user are two sessions.
	second := tg.login(t, u)
	if second == body.AuthToken {
		t.Errorf("second login returned the same token; want a new session")
	}
}

func checkWrongPassword(t *testing.T, tg *target) {
	u := tg.users[0]
	r := tg.postTokens(t, url.Values{"username": {u.name}, "password": {u.password + "-wrong"}})
	e := checkAPIError(t, r, http.StatusForbidden, "INVALID_CREDENTIALS", "Permission Denied.")

	var expected []map[string]any
	mustUnmarshal(t, e["expected"], &expected)
	var names []string
	for _, f := range expected {
		name, _ := f["name"].(string)
		names = append(names, name)
	}
	if !slices.Contains(names, "username") || !slices.Contains(names, "password") {
		t.Errorf("expected = %s; want fields named username and password", e["expected"])
	}
}

// checkJSONLogin: Guacamole reads only form fields, so a JSON body is no
// login, whatever it holds.
func checkJSONLogin(t *testing.T, tg *target) {
	u := tg.users[0]
	body, _ := json.Marshal(map[string]string{"username": u.name, "password": u.password})
	req := tg.newRequest(t, http.MethodPost, "/api/tokens", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	r := tg.send(t, req)
	if r.status < 400 {
		t.Fatalf("JSON login: status = %d; want an error (body %s)", r.status, r.body)
	}
	if bytes.Contains(r.body, []byte("authToken")) {
		t.Errorf("JSON login answered with a token: %s", r.body)
	}
	t.Logf("JSON login: status %d, body %s", r.status, r.body)
}

func checkTokenPlacement(t *testing.T, tg *target) {
	tok := tg.login(t, tg.users[0])

	r := tg.connections(t, tok, "")
	checkConnections(t, "token in header", r)

	r = tg.connections(t, "", tok)
	checkConnections(t, "token in query", r)
}

func checkHeaderWins(t *testing.T, tg *target) {
	tok := tg.login(t, tg.users[0])
	bogus := randomToken(t)

	r := tg.connections(t, tok, bogus)
	checkConnections(t, "good header, bad query", r)

	r = tg.connections(t, bogus, tok)
	checkAPIError(t, r, http.StatusForbidden, "PERMISSION_DENIED", "Permission Denied.")

	// A header that is present but empty does not count.
	req := tg.newRequest(t, http.MethodGet, tg.connectionsPath()+"?token="+tok, nil)
	req.Header["Guacamole-Token"] = []string{""}
	r = tg.send(t, req)
	checkConnections(t, "empty header, good query", r)

	// The failure above was charged to the bogus token, not to tok.
	r = tg.connections(t, tok, "")
	checkConnections(t, "good header after a bad one", r)
}

func checkUnknownToken(t *testing.T, tg *target) {
	r := tg.connections(t, randomToken(t), "")
	e := checkAPIError(t, r, http.StatusForbidden, "PERMISSION_DENIED", "Permission Denied.")
	checkNull(t, e, "expected")

	r = tg.connections(t, "", "")
	checkAPIError(t, r, http.StatusForbidden, "PERMISSION_DENIED", "Permission Denied.")
}

func checkReauth(t *testing.T, tg *target) {
	u := tg.users[0]
	tok := tg.login(t, u)

	r := tg.postTokens(t, url.Values{"token": {tok}})
	got := loginResult(t, "re-auth with token", r)
	if got.AuthToken != tok {
		t.Errorf("re-auth with token returned a different token; want the same")
	}
	if got.Username != u.name {
		t.Errorf("re-auth username = %q; want %q", got.Username, u.name)
	}

	// Credentials sent along with a valid token are ignored, even wrong
	// ones for another user.
	other := tg.users[1]
	r = tg.postTokens(t, url.Values{
		"token":    {tok},
		"username": {other.name},
		"password": {other.password + "-wrong"},
	})
	got = loginResult(t, "re-auth with token and foreign credentials", r)
	if got.AuthToken != tok || got.Username != u.name {
		t.Errorf("re-auth with foreign credentials: got user %q, same token %v; want %q, true",
			got.Username, got.AuthToken == tok, u.name)
	}
}

// checkReauthUnknownToken: an unknown token in a login is as if none were
// sent.
func checkReauthUnknownToken(t *testing.T, tg *target) {
	u := tg.users[0]
	bogus := randomToken(t)

	r := tg.postTokens(t, url.Values{"token": {bogus}, "username": {u.name}, "password": {u.password}})
	got := loginResult(t, "login with unknown token and credentials", r)
	tg.revokeLater(t, got.AuthToken)
	if got.AuthToken == bogus || !tokenPattern.MatchString(got.AuthToken) {
		t.Errorf("login with unknown token: want a fresh token")
	}

	r = tg.postTokens(t, url.Values{"token": {randomToken(t)}})
	checkAPIError(t, r, http.StatusForbidden, "INVALID_CREDENTIALS", "Permission Denied.")
}

func checkRevoke(t *testing.T, tg *target) {
	u := tg.users[0]
	tok := tg.login(t, u)

	r := tg.deleteToken(t, tok)
	if r.status != http.StatusNoContent {
		t.Fatalf("DELETE token: status = %d; want 204 (body %s)", r.status, r.body)
	}
	if len(r.body) != 0 {
		t.Errorf("DELETE token: body = %q; want none", r.body)
	}

	r = tg.deleteToken(t, tok)
	e := checkAPIError(t, r, http.StatusNotFound, "NOT_FOUND", "No such token.")
	checkNull(t, e, "expected")

	r = tg.connections(t, tok, "")
	checkAPIError(t, r, http.StatusForbidden, "PERMISSION_DENIED", "Permission Denied.")

	r = tg.postTokens(t, url.Values{"token": {tok}, "username": {u.name}, "password": {u.password}})
	got := loginResult(t, "login with revoked token and credentials", r)
	tg.revokeLater(t, got.AuthToken)
	if got.AuthToken == tok {
		t.Errorf("login with a revoked token revived it; want a new token")
	}
}

func checkDeleteSession(t *testing.T, tg *target) {
	tok := tg.login(t, tg.users[0])

	req := tg.newRequest(t, http.MethodDelete, "/api/session", nil)
	req.Header.Set("Guacamole-Token", tok)
	r := tg.send(t, req)
	if r.status != http.StatusNoContent {
		t.Fatalf("DELETE /api/session: status = %d; want 204 (body %s)", r.status, r.body)
	}

	r = tg.connections(t, tok, "")
	checkAPIError(t, r, http.StatusForbidden, "PERMISSION_DENIED", "Permission Denied.")
}

func checkHeadSession(t *testing.T, tg *target) {
	tok := tg.login(t, tg.users[0])

	if got := tg.headSession(t, tok); got != http.StatusNoContent {
		t.Errorf("HEAD /api/session with a valid token: status = %d; want 204", got)
	}
	if got := tg.headSession(t, randomToken(t)); got != http.StatusForbidden {
		t.Errorf("HEAD /api/session with an unknown token: status = %d; want 403", got)
	}
	if got := tg.headSession(t, ""); got != http.StatusForbidden {
		t.Errorf("HEAD /api/session without a token: status = %d; want 403", got)
	}

	// Checking a token does not use it up.
	r := tg.connections(t, tok, "")
	checkConnections(t, "after HEAD", r)
}

func checkUnknownDataSource(t *testing.T, tg *target) {
	tok := tg.login(t, tg.users[0])

	req := tg.newRequest(t, http.MethodGet, "/api/session/data/nope/connections", nil)
	req.Header.Set("Guacamole-Token", tok)
	r := tg.send(t, req)
	checkAPIError(t, r, http.StatusNotFound, "NOT_FOUND",
		`Session not associated with authentication provider "nope".`)

	// Not an authentication failure: the token stays valid.
	r = tg.connections(t, tok, "")
	checkConnections(t, "after unknown data source", r)
}

// checkUnusedTokenExpires: a token nobody uses is gone after the timeout
// plus the sweep interval. HEAD /api/session reports on a token without
// resetting its idle timer, so a token that is only checked expires too.
func checkUnusedTokenExpires(t *testing.T, tg *target) {
	unused := tg.login(t, tg.users[0])
	checked := tg.login(t, tg.users[len(tg.users)-1])

	tg.advance(t, useEvery)
	if got := tg.headSession(t, checked); got != http.StatusNoContent {
		t.Errorf("HEAD after %v idle: status = %d; want 204", useEvery, got)
	}
	tg.advance(t, idleSpan-useEvery)

	r := tg.connections(t, unused, "")
	checkAPIError(t, r, http.StatusForbidden, "PERMISSION_DENIED", "Permission Denied.")
	r = tg.connections(t, checked, "")
	checkAPIError(t, r, http.StatusForbidden, "PERMISSION_DENIED", "Permission Denied.")
}

func checkUsedTokenSurvives(t *testing.T, tg *target) {
	tok := tg.login(t, tg.users[1])

	var elapsed time.Duration
	for elapsed+useEvery <= idleSpan {
		tg.advance(t, useEvery)
		elapsed += useEvery
		r := tg.connections(t, tok, "")
		checkConnections(t, "use after "+elapsed.String(), r)
	}
	tg.advance(t, idleSpan-elapsed)
	r := tg.connections(t, tok, "")
	checkConnections(t, "use after "+idleSpan.String(), r)
}

func checkRestartLosesTokens(t *testing.T, tg *target) {
	if tg.restart == nil {
		t.Skipf("target cannot be restarted (set %s)", envRestart)
	}
	var tokens []string
	for _, u := range tg.users {
		tokens = append(tokens, tg.login(t, u))
	}

	tg.restart(t)
	for i, tok := range tokens {
		r := tg.connections(t, tok, "")
		if r.status != http.StatusForbidden {
			t.Errorf("token of %s after restart: status = %d; want 403 (body %s)",
				tg.users[i].name, r.status, r.body)
			continue
		}
		checkAPIError(t, r, http.StatusForbidden, "PERMISSION_DENIED", "Permission Denied.")
	}

	tok := tg.login(t, tg.users[0])
	checkConnections(t, "new login after restart", tg.connections(t, tok, ""))
}

// checkBan: five failed logins from one address ban it; from then on even
// correct credentials get 429.
func checkBan(t *testing.T, tg *target) {
	if !tg.ban {
		t.Skipf("ban extension not present (set %s=1 when it is)", envBan)
	}
	if tg.restart == nil {
		t.Skipf("the ban check needs %s to start from a clean count and to lift the ban", envRestart)
	}
	// Earlier checks failed some logins of their own; start from zero.
	tg.restart(t)
	t.Cleanup(func() { tg.restart(t) })

	u := tg.users[0]
	wrong := url.Values{"username": {u.name}, "password": {u.password + "-wrong"}}
	for i := 1; i < banLimit; i++ {
		r := tg.postTokens(t, wrong)
		if r.status != http.StatusForbidden {
			t.Fatalf("failed login %d: status = %d; want 403 (body %s)", i, r.status, r.body)
		}
	}

	// The failure that reaches the limit is already answered with the ban.
	r := tg.postTokens(t, wrong)
	checkBanned(t, "failed login 5", r)

	r = tg.postTokens(t, url.Values{"username": {u.name}, "password": {u.password}})
	checkBanned(t, "correct login while banned", r)
}

func checkBanned(t *testing.T, what string, r reply) {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Errorf("%s: status = %d; want 429 (body %s)", what, r.status, r.body)
		return
	}
	e := checkAPIError(t, r, http.StatusTooManyRequests, "BAD_REQUEST",
		"Too many failed authentication attempts.")
	checkNull(t, e, "expected")
}

// Targets.

var testUsers = []account{
	{"svc-reporting", "reporting-pass"},
	{"svc-tool", "tool-pass"},
	{"guacadmin", "guacadmin-pass"},
}

func newEmulator(t *testing.T) *target {
	clock := guacamoletest.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	users := make(map[string]guacamoletest.User, len(testUsers))
	for _, u := range testUsers {
		users[u.name] = guacamoletest.User{Password: u.password, Admin: u.name == "guacadmin"}
	}
	srv := guacamoletest.NewServer(guacamoletest.Options{
		Users:          users,
		SessionTimeout: sessionTimeout,
		Clock:          clock.Now,
	})
	t.Cleanup(srv.Close)

	return &target{
		base:       srv.URL,
		dataSource: "default",
		users:      testUsers,
		client:     newClient(),
		advance: func(t *testing.T, d time.Duration) {
			clock.Advance(d)
			srv.ExpireIdle() // what the real server's sweep does
		},
		restart: func(t *testing.T) { srv.Restart() },
		ban:     true,
	}
}

// realProvider returns the provider for the server named by the
// environment, or nil and the reason there is none.
func realProvider() (provider, string) {
	base := strings.TrimRight(os.Getenv(envURL), "/")
	if base == "" {
		return nil, envURL + " is not set; no real Guacamole to check against"
	}
	tg := &target{
		base:       base,
		dataSource: os.Getenv(envDataSource),
		client:     newClient(),
		advance:    sleepIdle,
		ban:        os.Getenv(envBan) == "1",
	}
	if tg.dataSource == "" {
		tg.dataSource = "default"
	}
	for _, entry := range strings.Split(os.Getenv(envUsers), ",") {
		name, password, ok := strings.Cut(strings.TrimSpace(entry), ":")
		if ok && name != "" {
			tg.users = append(tg.users, account{name, password})
		}
	}
	if cmd := os.Getenv(envRestart); cmd != "" {
		tg.restart = func(t *testing.T) { runRestart(t, cmd, tg.client) }
	}

	return func(t *testing.T) *target {
		if len(tg.users) < 2 {
			t.Fatalf("%s must list at least two name:password accounts", envUsers)
		}
		return tg
	}, ""
}

func sleepIdle(t *testing.T, d time.Duration) {
	if testing.Short() {
		t.Skip("idle checks wait for minutes on a real server; skipped with -short")
	}
	time.Sleep(d)
}

// runRestart runs the restart command and waits for it, which includes
// waiting until the web application answers again.
func runRestart(t *testing.T, command string, client *http.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	start := time.Now()
	out, err := exec.CommandContext(ctx, "sh", "-c", command).CombinedOutput()
	if err != nil {
		t.Fatalf("restart %q: %v\n%s", command, err, out)
	}
	client.CloseIdleConnections()
	t.Logf("restarted the web application in %v", time.Since(start).Round(time.Second))
}

func newClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		// A restart drops every connection; never reuse one across it.
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// HTTP helpers.

// reply is a response read in full.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (tg *target) newRequest(t *testing.T, method, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, tg.base+path, body)
	if err != nil {
		t.Fatalf("build %s %s: %v", method, path, err)
	}
	return req
}

func (tg *target) send(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := tg.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: body}
}

// postTokens posts form to /api/tokens with the form content type.
func (tg *target) postTokens(t *testing.T, form url.Values) reply {
	t.Helper()
	req := tg.newRequest(t, http.MethodPost, "/api/tokens", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return tg.send(t, req)
}

// login logs u in and returns the token, which is revoked when the test
// ends.
func (tg *target) login(t *testing.T, u account) string {
	t.Helper()
	r := tg.postTokens(t, url.Values{"username": {u.name}, "password": {u.password}})
	got := loginResult(t, "login as "+u.name, r)
	tg.revokeLater(t, got.AuthToken)
	return got.AuthToken
}

// revokeLater revokes tok when the test ends, so that a shared server does
// not pile up sessions. A token already gone is fine.
func (tg *target) revokeLater(t *testing.T, tok string) {
	if tok == "" {
		return
	}
	t.Cleanup(func() {
		req, err := http.NewRequest(http.MethodDelete, tg.base+"/api/tokens/"+tok, nil)
		if err != nil {
			return
		}
		if resp, err := tg.client.Do(req); err == nil {
			resp.Body.Close()
		}
	})
}

func (tg *target) deleteToken(t *testing.T, tok string) reply {
	t.Helper()
	return tg.send(t, tg.newRequest(t, http.MethodDelete, "/api/tokens/"+tok, nil))
}

func (tg *target) connectionsPath() string {
	return "/api/session/data/" + tg.dataSource + "/connections"
}

// connections lists connections, passing header as Guacamole-Token and
// query as the token parameter; empty ones are left out.
func (tg *target) connections(t *testing.T, header, query string) reply {
	t.Helper()
	path := tg.connectionsPath()
	if query != "" {
		path += "?token=" + url.QueryEscape(query)
	}
	req := tg.newRequest(t, http.MethodGet, path, nil)
	if header != "" {
		req.Header.Set("Guacamole-Token", header)
	}
	return tg.send(t, req)
}

// headSession returns the status of HEAD /api/session for tok, sent in the
// header; an empty tok sends none.
func (tg *target) headSession(t *testing.T, tok string) int {
	t.Helper()
	req := tg.newRequest(t, http.MethodHead, "/api/session", nil)
	if tok != "" {
		req.Header.Set("Guacamole-Token", tok)
	}
	return tg.send(t, req).status
}

// Body checks.

type loginBody struct {
	AuthToken string `json:"authToken"`
	Username  string `json:"username"`
}

func loginResult(t *testing.T, what string, r reply) loginBody {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s: status = %d; want 200 (body %s)", what, r.status, r.body)
	}
	var b loginBody
	mustUnmarshal(t, r.body, &b)
	if !tokenPattern.MatchString(b.AuthToken) {
		t.Fatalf("%s: authToken = %q; want 64 upper-case hex digits", what, redact(b.AuthToken))
	}
	return b
}

func checkConnections(t *testing.T, what string, r reply) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s: status = %d; want 200 (body %s)", what, r.status, r.body)
	}
	checkJSONType(t, r)
	if len(decodeObject(t, r)) == 0 {
		t.Errorf("%s: no connections listed; want the test connections", what)
	}
}

var errorFields = []string{
	"expected", "message", "patches", "statusCode", "translatableMessage", "type",
}

// checkAPIError checks that r is a Guacamole REST error with the given
// status, type and message, in Guacamole's full error shape, and returns its
// fields.
func checkAPIError(t *testing.T, r reply, status int, typ, msg string) map[string]json.RawMessage {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d; want %d (body %s)", r.status, status, r.body)
	}
	checkJSONType(t, r)
	e := decodeObject(t, r)
	if got := slices.Sorted(maps.Keys(e)); !slices.Equal(got, errorFields) {
		t.Errorf("error fields = %q; want %q (body %s)", got, errorFields, r.body)
	}

	var s struct {
		Message             string `json:"message"`
		Type                string `json:"type"`
		TranslatableMessage struct {
			Key       string            `json:"key"`
			Variables map[string]string `json:"variables"`
		} `json:"translatableMessage"`
	}
	mustUnmarshal(t, r.body, &s)
	if s.Type != typ {
		t.Errorf("type = %q; want %q (body %s)", s.Type, typ, r.body)
	}
	if s.Message != msg {
		t.Errorf("message = %q; want %q", s.Message, msg)
	}
	tm := s.TranslatableMessage
	switch tm.Key {
	case "APP.TEXT_UNTRANSLATED":
		if tm.Variables["MESSAGE"] != msg || len(tm.Variables) != 1 {
			t.Errorf("translatableMessage.variables = %v; want MESSAGE = %q only", tm.Variables, msg)
		}
	case "":
		t.Errorf("translatableMessage has no key (body %s)", r.body)
	default:
		// A translated message names its own key and carries no text.
		checkNull(t, decodeRaw(t, e["translatableMessage"]), "variables")
	}
	checkNull(t, e, "statusCode")
	checkNull(t, e, "patches")
	return e
}

func checkNull(t *testing.T, obj map[string]json.RawMessage, field string) {
	t.Helper()
	if v, ok := obj[field]; !ok || string(v) != "null" {
		t.Errorf("%s = %s; want null", field, v)
	}
}

func checkJSONType(t *testing.T, r reply) {
	t.Helper()
	mt, _, err := mime.ParseMediaType(r.header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", r.header.Get("Content-Type"))
	}
}

func decodeObject(t *testing.T, r reply) map[string]json.RawMessage {
	t.Helper()
	return decodeRaw(t, r.body)
}

func decodeRaw(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	mustUnmarshal(t, b, &m)
	return m
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// randomToken returns a token in Guacamole's format that no server issued.
func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random token: %v", err)
	}
	return strings.ToUpper(hex.EncodeToString(b))
}

// redact keeps test logs free of whole tokens.
func redact(tok string) string {
	return fmt.Sprintf("%.4s… (%d characters)", tok, len(tok))
}
