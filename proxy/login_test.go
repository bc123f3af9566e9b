package proxy

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var guacTokenShape = regexp.MustCompile(`^[0-9A-F]{64}$`)

type loginAnswer struct {
	AuthToken            string   `json:"authToken"`
	Username             string   `json:"username"`
	DataSource           string   `json:"dataSource"`
	AvailableDataSources []string `json:"availableDataSources"`
}

// login posts a Guacamole login form to the proxy.
func (e *env) login(t *testing.T, form url.Values, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Content-Type", "application/x-www-form-urlencoded")
	return e.do(t, http.MethodPost, "/api/tokens", hdr, strings.NewReader(form.Encode()))
}

func decodeLogin(t *testing.T, body []byte) loginAnswer {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("login answer is not JSON: %s", body)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"authToken", "availableDataSources", "dataSource", "username"}; !slices.Equal(keys, want) {
		t.Errorf("login answer fields = %v; want exactly %v", keys, want)
	}
	var a loginAnswer
	_ = json.Unmarshal(body, &a)
	if !guacTokenShape.MatchString(a.AuthToken) {
		t.Errorf("authToken is not shaped like a Guacamole token")
	}
	return a
}

func (e *env) self(t *testing.T, hdr http.Header, query string) (int, string) {
	t.Helper()
	resp, body := e.do(t, http.MethodGet, "/api/session/data/default/self"+query, hdr, nil)
	var s struct{ Username string }
	_ = json.Unmarshal(body, &s)
	return resp.StatusCode, s.Username
}

func TestLoginEmulationWithTheDefaultIdentity(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, body := e.login(t, url.Values{"username": {"anyone"}, "password": {"dummy"}}, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login status = %d; want 200 (%s)", resp.StatusCode, body)
	}
	a := decodeLogin(t, body)
	if a.Username != tool.Username || a.DataSource != "default" ||
		!slices.Equal(a.AvailableDataSources, []string{"default"}) {
		t.Errorf("login answer = %+v; want the default identity's real account", a)
	}
	if slices.Contains(e.emu.LiveTokens(), a.AuthToken) {
		t.Fatal("the client was given the real token")
	}

	// The phantom works wherever Guacamole reads a token.
	for name, use := range map[string]struct {
		hdr   http.Header
		query string
	}{
		"header": {http.Header{"Guacamole-Token": {a.AuthToken}}, ""},
		"query":  {nil, "?token=" + a.AuthToken},
	} {
		code, user := e.self(t, use.hdr, use.query)
		if code != http.StatusOK || user != tool.Username {
			t.Errorf("%s: self = %d %q; want 200 %q", name, code, user, tool.Username)
		}
		if got := e.seen.last(t).Header.Get("Guacamole-Token"); got == a.AuthToken || got == "" {
			t.Errorf("%s: Guacamole got the phantom or no token", name)
		}
	}

	// A re-auth of the phantom answers the same phantom, as Guacamole does.
	resp, body = e.login(t, url.Values{"token": {a.AuthToken}}, nil)
	if again := decodeLogin(t, body); resp.StatusCode != http.StatusOK || again.AuthToken != a.AuthToken {
		t.Errorf("re-auth status %d; want 200 and the same token", resp.StatusCode)
	}

	// Logging out forgets the phantom only.
	if resp, _ := e.do(t, http.MethodDelete, "/api/tokens/"+a.AuthToken, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("logout status = %d; want 204", resp.StatusCode)
	}
	resp, body = e.do(t, http.MethodDelete, "/api/tokens/"+a.AuthToken, nil, nil)
	if resp.StatusCode != http.StatusNotFound || guacError(t, body).Type != "NOT_FOUND" {
		t.Errorf("second logout status = %d; want 404 NOT_FOUND", resp.StatusCode)
	}
	if st := e.emu.Stats(); st.Logins != 1 || st.Revocations != 0 || st.FailedLogins != 0 {
		t.Errorf("Guacamole logins=%d revocations=%d failed=%d; want 1, 0, 0",
			st.Logins, st.Revocations, st.FailedLogins)
	}
	if strings.Contains(logs.String(), a.AuthToken) {
		t.Error("the phantom token appears in the logs")
	}
}

func TestLoginEmulationByAPIKeyAsPassword(t *testing.T) {
	e := newEnv(t, envOptions{identities: []Identity{
		{Identity: reporting, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(reportingKey))}},
		{Identity: tool, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(toolKey))}},
	}})

	resp, body := e.login(t, url.Values{"username": {"whoever"}, "password": {"not-a-key"}}, nil)
	if resp.StatusCode != http.StatusForbidden || guacError(t, body).Type != "INVALID_CREDENTIALS" {
		t.Fatalf("login with a wrong key: %d %s; want 403 INVALID_CREDENTIALS", resp.StatusCode, body)
	}

	resp, body = e.login(t, url.Values{"username": {"whoever"}, "password": {reportingKey}}, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login with an API key: %d %s", resp.StatusCode, body)
	}
	a := decodeLogin(t, body)
	if a.Username != reporting.Username {
		t.Errorf("username = %q; want %q", a.Username, reporting.Username)
	}

	tests := []struct {
		name     string
		hdr      http.Header
		query    string
		wantCode int
		wantUser string
	}{
		{"phantom alone identifies", nil, "?token=" + a.AuthToken, http.StatusOK, reporting.Username},
		{"phantom with its own key", bearerHeader(reportingKey), "?token=" + a.AuthToken, http.StatusOK, reporting.Username},
		{"phantom with another identity's key", bearerHeader(toolKey), "?token=" + a.AuthToken, http.StatusForbidden, ""},
		{"unknown token", nil, "?token=" + strings.Repeat("A", 64), http.StatusForbidden, ""},
		{"nothing", nil, "", http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.seen.count()
			code, user := e.self(t, tt.hdr, tt.query)
			if code != tt.wantCode || user != tt.wantUser {
				t.Errorf("self = %d %q; want %d %q", code, user, tt.wantCode, tt.wantUser)
			}
			if tt.wantCode != http.StatusOK && e.seen.count() != before {
				t.Error("a refused request reached Guacamole")
			}
		})
	}
	if st := e.emu.Stats(); st.FailedLogins != 0 {
		t.Errorf("failed logins at Guacamole = %d; want 0 (posted credentials are never forwarded)", st.FailedLogins)
	}
}

func TestLoginEmulationErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, body := e.do(t, http.MethodPost, "/api/tokens", http.Header{"Content-Type": {"application/json"}},
		strings.NewReader(`{"username":"a","password":"b"}`))
	if resp.StatusCode != http.StatusBadRequest || guacError(t, body).Type != "BAD_REQUEST" {
		t.Errorf("JSON login: %d %s; want 400 BAD_REQUEST", resp.StatusCode, body)
	}
	if e.seen.count() != 0 {
		t.Error("a refused login reached Guacamole")
	}
}

func TestEndSessionWithAPhantom(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, body := e.login(t, url.Values{"username": {"a"}, "password": {"b"}}, nil)
	a := decodeLogin(t, body)
	resp, _ := e.do(t, http.MethodDelete, "/api/session", http.Header{"Guacamole-Token": {a.AuthToken}}, nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE /api/session = %d; want 204", resp.StatusCode)
	}
	resp, _ = e.do(t, http.MethodDelete, "/api/tokens/"+a.AuthToken, nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("phantom still known after its session ended: %d", resp.StatusCode)
	}
	if st := e.emu.Stats(); st.LiveSessions != 1 || st.Revocations != 0 {
		t.Errorf("Guacamole live=%d revocations=%d; want 1 and 0", st.LiveSessions, st.Revocations)
	}
}
