package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/guacproxy/guacproxy/config"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunCommands(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, `
guacamole: {url: http://127.0.0.1:8081/guacamole}
identities:
  - {name: tool, username: svc-tool, password_file: `+pwFile+`, default: true}
`)
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, `
listen: nowhere
guacamole: {url: ftp://x, timeout: soon}
identities:
  - {name: tool, username: svc-tool, password_file: `+filepath.Join(dir, "missing")+`}
`)

	tests := []struct {
		name     string
		args     []string
		env      string
		wantCode int
		wantOut  []string // substrings of stdout+stderr
	}{
		{"no command", nil, "", exitUsage, []string{"Usage:"}},
		{"unknown command", []string{"frobnicate"}, "", exitUsage, []string{`unknown command "frobnicate"`}},
		{"version", []string{"version"}, "", exitOK, []string{"guacproxy dev"}},
		{"check ok", []string{"check", "--config", good}, "", exitOK, []string{"configuration is valid"}},
		{"check from env", []string{"check"}, good, exitOK, []string{"configuration is valid"}},
		{"check without config", []string{"check"}, "", exitUsage, []string{"--config"}},
		{"check lists every problem", []string{"check", "--config", bad}, "", exitUsage, []string{
			"listen:", "guacamole.url:", "guacamole.timeout:",
			"identities[0].password_file: no such file",
		}},
		{"serve with a bad config", []string{"serve", "--config", bad}, "", exitUsage, []string{"identities[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GUACPROXY_CONFIG", tt.env)
			var out bytes.Buffer
			code := run(tt.args, &out, &out)
			if code != tt.wantCode {
				t.Errorf("exit code = %d; want %d\n%s", code, tt.wantCode, out.String())
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			if strings.Contains(out.String(), "s3cret-password") {
				t.Error("the password appears in the output")
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownDrainsThenRevokes plays a SIGTERM: the request in flight
// completes, /readyz turns 503 while it drains, and every token is revoked.
func TestShutdownDrainsThenRevokes(t *testing.T) {
	const password = "drain-test-password"
	emu := guacamoletest.New(guacamoletest.Options{
		Users: map[string]guacamoletest.User{"svc-tool": {Password: password}},
	})
	arrived, release := make(chan struct{}), make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/connections") {
			close(arrived)
			<-release
		}
		emu.ServeHTTP(w, r)
	}))
	t.Cleanup(upstream.Close)

	cfg := toolConfig(t, upstream.URL+"/guacamole", password, nil)
	var logs syncBuffer
	logger, _ := newLogger(config.Log{Level: "debug", Format: "json"}, &logs)
	r := serve(t, newTestServer(t, cfg, logger))
	base, admin := r.base(), "http://"+r.srv.adminAddr()
	if got := status(t, base+"/api/session/data/default/self"); got != http.StatusOK {
		t.Fatalf("request before shutdown = %d; want 200", got)
	}

	inflight := make(chan int, 1)
	go func() { inflight <- status(t, base+"/api/session/data/default/connections") }()
	<-arrived
	r.stopped = true
	r.cancel() // as SIGTERM does
	waitFor(t, func() bool { return status(t, admin+"/readyz") == http.StatusServiceUnavailable })
	if got := status(t, admin+"/healthz"); got != http.StatusOK {
		t.Errorf("healthz while draining = %d; want 200", got)
	}
	if st := emu.Stats(); st.Revocations != 0 {
		t.Fatalf("revoked %d tokens before the in-flight request finished", st.Revocations)
	}

	close(release)
	if got := <-inflight; got != http.StatusOK {
		t.Errorf("in-flight request = %d; want 200", got)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if st := emu.Stats(); st.LiveSessions != 0 || st.Revocations != 1 {
		t.Errorf("after shutdown: live=%d revocations=%d; want 0 and 1", st.LiveSessions, st.Revocations)
	}
	if !strings.Contains(logs.String(), `"revoked":1`) {
		t.Errorf("shutdown did not log the revocation count:\n%s", logs.String())
	}
	if guacamoleToken.MatchString(logs.String()) || strings.Contains(logs.String(), password) {
		t.Error("a token or the password appears in the logs")
	}
}

func TestDemoServes(t *testing.T) {
	var logs, out syncBuffer
	logger, _ := newLogger(config.Log{Level: "info", Format: "console"}, &logs)
	cfg, emu := demoSetup("127.0.0.1:0", "127.0.0.1:0", logger)
	t.Cleanup(emu.Close)
	r := serve(t, newTestServer(t, cfg, logger))
	printDemoHelp(&out, r.srv.proxyAddr(), r.srv.adminAddr())

	// The commands the demo prints work as printed.
	for _, line := range strings.Split(out.String(), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "curl -s ") {
			continue
		}
		url := strings.Trim(strings.Fields(line)[2], "'")
		waitFor(t, func() bool { return status(t, url) == http.StatusOK })
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if st := emu.Stats(); st.Logins != 1 || st.LiveSessions != 0 {
		t.Errorf("emulator: logins=%d live=%d; want 1 and 0", st.Logins, st.LiveSessions)
	}
	for _, want := range []string{"logged in", "guacamole received", "token_fp", "tokens revoked"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("demo logs lack %q", want)
		}
	}
	if guacamoleToken.MatchString(logs.String()) {
		t.Errorf("a Guacamole token appears in the demo logs:\n%s", logs.String())
	}
}

// guacamoleToken matches anything shaped like a Guacamole auth token.
var guacamoleToken = regexp.MustCompile(`[0-9A-Fa-f]{64}`)

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond until it holds. It bounds the wait only to keep a
// broken test from hanging; no timing is asserted.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
