package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guacproxy/guacproxy/config"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// defaultPyClientVenv is where .ci/pyclient.sh puts its virtualenv unless
// GUACPROXY_PYCLIENT_VENV says otherwise.
const defaultPyClientVenv = "/tmp/guacproxy-pyclient-venv"

// pyClientSummary is what testdata/pyclient/drive.py prints after a run.
type pyClientSummary struct {
	Client               string   `json:"client"`
	Mode                 string   `json:"mode"`
	LoginUsername        string   `json:"loginUsername"`
	Username             string   `json:"username"`
	DataSource           string   `json:"dataSource"`
	AvailableDataSources []string `json:"availableDataSources"`
	TokenShaped          bool     `json:"tokenShaped"`
	Connections          []string `json:"connections"`
	LoggedOut            bool     `json:"loggedOut"`
}

// upstreamLog records what reaches the emulator behind guacproxy: the
// usernames of login attempts, the tokens Guacamole issued, and every token
// a request carried.
type upstreamLog struct {
	mu        sync.Mutex
	logins    map[string]int
	issued    map[string]bool
	presented []string
}

func newUpstreamLog() *upstreamLog {
	return &upstreamLog{logins: make(map[string]int), issued: make(map[string]bool)}
}

// observe notes every token r carries, wherever Guacamole or a lenient
// reader might find one. The emulator calls it before handling r.
func (l *upstreamLog) observe(r *http.Request) {
	var toks []string
	for name, vals := range r.Header {
		if strings.EqualFold(name, "Guacamole-Token") {
			toks = append(toks, vals...)
		}
	}
	for name, vals := range r.URL.Query() {
		if strings.EqualFold(name, "token") {
			toks = append(toks, vals...)
		}
	}
	if tok, ok := strings.CutPrefix(r.URL.Path, "/guacamole/api/tokens/"); ok {
		toks = append(toks, tok)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.presented = append(l.presented, toks...)
}

// handler serves emu, reading each login form on its way in and each issued
// token on its way out.
func (l *upstreamLog) handler(emu http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/guacamole/api/tokens" {
			emu.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))

		rec := httptest.NewRecorder()
		emu.ServeHTTP(rec, r)
		var answer struct {
			AuthToken string `json:"authToken"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &answer)

		l.mu.Lock()
		l.logins[form.Get("username")]++
		if tok := form.Get("token"); tok != "" {
			l.presented = append(l.presented, tok)
		}
		if answer.AuthToken != "" {
			l.issued[answer.AuthToken] = true
		}
		l.mu.Unlock()

		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// TestPyClientLogin proves login emulation with guacapy, a Guacamole REST
// client from PyPI used unmodified: it logs in to guacproxy with credentials
// no Guacamole account has, or with an API key as the password, lists
// connections and logs out, as it would against Guacamole itself.
//
// The client comes from .ci/pyclient.sh. Without it the test is skipped,
// unless GUACPROXY_REQUIRE_PYCLIENT=1 asks for a failure instead.
func TestPyClientLogin(t *testing.T) {
	python := pyClientPython(t)

	const (
		dataSource = "postgresql"
		apiKey     = "pyclient-test-api-key"
	)
	users := map[string]guacamoletest.User{
		"svc-tool":      {Password: "pyclient-tool-password"},
		"svc-reporting": {Password: "pyclient-reporting-password"},
	}
	ulog := newUpstreamLog()
	emu := guacamoletest.New(guacamoletest.Options{
		DataSource: dataSource,
		Users:      users,
		Observe:    ulog.observe,
	})
	t.Cleanup(emu.Close)
	upstream := httptest.NewServer(ulog.handler(emu))
	t.Cleanup(upstream.Close)

	keyHash := sha256.Sum256([]byte(apiKey))
	cfg := &config.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		Guacamole:   config.Guacamole{URL: upstream.URL + "/guacamole"},
		Identities: []config.Identity{
			{
				Name: "tool", Username: "svc-tool",
				Password: users["svc-tool"].Password, Default: true,
			},
			{
				Name: "reporting", Username: "svc-reporting",
				Password:      users["svc-reporting"].Password,
				APIKeysSHA256: []string{hex.EncodeToString(keyHash[:])},
			},
		},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger, _ := newLogger(config.Log{Level: "debug", Format: "json"}, &logs)
	r := serve(t, newTestServer(t, cfg, logger))
	base := r.base() + "/"

	secrets := []string{apiKey, users["svc-tool"].Password, users["svc-reporting"].Password}
	runs := []struct {
		mode     string
		env      []string
		username string // the Guacamole account the login must stand for
	}{
		{"dummy", nil, "svc-tool"},
		{
			"api-key",
			[]string{"GUACPROXY_API_KEY=" + apiKey, "GUACPROXY_USERNAME=anything"},
			"svc-reporting",
		},
	}
	for _, tc := range runs {
		sum := drivePyClient(t, python, base, tc.env, secrets)
		if sum.Mode != tc.mode {
			t.Errorf("%s: drive.py mode = %q; want %[1]q", tc.mode, sum.Mode)
		}
		if sum.LoginUsername != tc.username || sum.Username != tc.username {
			t.Errorf("%s: login username %q, session username %q; want %q for both",
				tc.mode, sum.LoginUsername, sum.Username, tc.username)
		}
		if want := []string{dataSource}; sum.DataSource != dataSource ||
			!slices.Equal(sum.AvailableDataSources, want) {
			t.Errorf("%s: dataSource %q, availableDataSources %q; want %q and %q",
				tc.mode, sum.DataSource, sum.AvailableDataSources, dataSource, want)
		}
		if want := []string{"demo-rdp", "demo-ssh"}; !slices.Equal(sum.Connections, want) {
			t.Errorf("%s: connections = %q; want %q", tc.mode, sum.Connections, want)
		}
		if !sum.TokenShaped {
			t.Errorf("%s: the token guacproxy handed out is not shaped like Guacamole's", tc.mode)
		}
		if !sum.LoggedOut {
			t.Errorf("%s: the client did not log out", tc.mode)
		}
	}

	// Logging out ended only the client's token: both real tokens are alive,
	// and guacproxy still serves its default identity without a new login.
	st := emu.Stats()
	if st.Logins != 2 || st.FailedLogins != 0 || st.Revocations != 0 {
		t.Errorf("emulator: logins=%d failed=%d revocations=%d; want 2, 0 and 0",
			st.Logins, st.FailedLogins, st.Revocations)
	}
	ulog.mu.Lock()
	logins := maps.Clone(ulog.logins)
	issued := slices.Sorted(maps.Keys(ulog.issued))
	ulog.mu.Unlock()
	if want := map[string]int{"svc-tool": 1, "svc-reporting": 1}; !maps.Equal(logins, want) {
		t.Errorf("logins reaching Guacamole, by username = %v; want %v", logins, want)
	}
	live := emu.LiveTokens()
	alive := 0
	for _, tok := range issued {
		if slices.Contains(live, tok) {
			alive++
		}
	}
	if len(issued) != 2 || alive != 2 {
		t.Errorf("after logout %d of the %d tokens Guacamole issued are alive; want 2 of 2",
			alive, len(issued))
	}
	if got := status(t, base+"api/session/data/"+dataSource+"/self"); got != http.StatusOK {
		t.Errorf("request after the clients logged out = %d; want 200", got)
	}
	if st := emu.Stats(); st.Logins != 2 {
		t.Errorf("emulator: %d logins after the clients logged out; want 2", st.Logins)
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}

	// Nothing but the tokens Guacamole issued ever reached it, the
	// revocations at shutdown included.
	ulog.mu.Lock()
	presented := slices.Clone(ulog.presented)
	issuedNow := maps.Clone(ulog.issued)
	ulog.mu.Unlock()
	if len(presented) == 0 {
		t.Error("no request reaching Guacamole carried a token")
	}
	for i, tok := range presented {
		if !issuedNow[tok] {
			t.Errorf("request %d of %d reaching Guacamole carried a token Guacamole did not issue",
				i+1, len(presented))
		}
	}
	if guacamoleToken.MatchString(logs.String()) || containsAny(logs.String(), secrets) {
		t.Error("a token, password or API key appears in guacproxy's logs")
	}
}

// pyClientPython returns the virtualenv python that has guacapy installed,
// skipping the test if there is none and GUACPROXY_REQUIRE_PYCLIENT is not 1.
func pyClientPython(t *testing.T) string {
	t.Helper()
	python := os.Getenv("GUACPROXY_PYCLIENT_PYTHON")
	if python == "" {
		venv := os.Getenv("GUACPROXY_PYCLIENT_VENV")
		if venv == "" {
			venv = defaultPyClientVenv
		}
		python = filepath.Join(venv, "bin", "python")
	}
	_, err := os.Stat(python)
	switch {
	case err == nil:
		return python
	case os.Getenv("GUACPROXY_REQUIRE_PYCLIENT") == "1":
		t.Fatalf("python client missing (%v); run .ci/pyclient.sh", err)
	case errors.Is(err, fs.ErrNotExist):
		t.Skipf("no python client at %s; run .ci/pyclient.sh to set one up", python)
	default:
		t.Fatal(err)
	}
	return ""
}

// drivePyClient runs drive.py against base with the extra environment env,
// and returns its summary. Nothing it prints may contain a token or one of
// secrets.
func drivePyClient(t *testing.T, python, base string, env, secrets []string) pyClientSummary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, filepath.Join("testdata", "pyclient", "drive.py"))
	cmd.Env = append(os.Environ(),
		"GUACPROXY_URL="+base,
		"GUACPROXY_API_KEY=",
		"NO_PROXY=127.0.0.1", "no_proxy=127.0.0.1",
		"PYTHONDONTWRITEBYTECODE=1",
	)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()

	leaks := func(out string) bool {
		return guacamoleToken.MatchString(out) || containsAny(out, secrets)
	}
	if leaks(stdout.String()) || leaks(stderr.String()) {
		t.Fatalf("drive.py printed a token, password or API key (exit: %v)", err)
	}
	if err != nil {
		t.Fatalf("drive.py: %v\n%s", err, stderr.String())
	}
	var sum pyClientSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		t.Fatalf("drive.py printed %q: %v", stdout.String(), err)
	}
	t.Logf("%s", strings.TrimSpace(stdout.String()))
	return sum
}

func containsAny(s string, subs []string) bool {
	return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(s, sub) })
}
