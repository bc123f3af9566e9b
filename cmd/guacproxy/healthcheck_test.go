package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = w.Write([]byte("ready\n"))
		case "/draining":
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case "/slow":
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	}))
	defer ready.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	// A config whose admin_listen is the test server, written the way a
	// pod would: a wildcard host, reached over loopback.
	port := ready.URL[strings.LastIndex(ready.URL, ":")+1:]
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "admin_listen: 0.0.0.0:"+port+"\n")

	up, down := ready.URL, dead.URL
	tests := []struct {
		name     string
		args     []string
		env      string
		wantCode int
		wantOut  string
	}{
		{"ready", []string{"--url", up + "/readyz"}, "", exitOK, "healthy: "},
		{"not ready", []string{"--url", up + "/draining"}, "", exitRuntime, "503 Service Unavailable"},
		{"redirect not followed", []string{"--url", up + "/moved"}, "", exitRuntime, "302 Found"},
		{"not found", []string{"--url", up + "/elsewhere"}, "", exitRuntime, "404 Not Found"},
		{"too slow", []string{"--url", up + "/slow", "--timeout", "50ms"}, "", exitRuntime,
			"did not answer within 50ms"},
		{"nobody listening", []string{"--url", down + "/readyz"}, "", exitRuntime, "unhealthy: "},
		{"address from GUACPROXY_CONFIG", nil, cfg, exitOK,
			"healthy: http://127.0.0.1:" + port + "/readyz"},
		{"--url wins", []string{"--url", down + "/readyz"}, cfg, exitRuntime, "unhealthy: "},
		{"bad URL", []string{"--url", "::"}, "", exitRuntime, "unhealthy: "},
		{"bad timeout", []string{"--timeout", "0s"}, "", exitRuntime, "--timeout"},
		{"unknown flag", []string{"--frobnicate"}, "", exitRuntime, "frobnicate"},
		{"extra arguments", []string{"now"}, "", exitRuntime, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GUACPROXY_CONFIG", tt.env)
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"healthcheck"}, tt.args...), &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tt.wantCode {
				t.Errorf("exit code = %d; want %d\n%s", code, tt.wantCode, out)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("output = %q; want it to contain %q", out, tt.wantOut)
			}
			if code == exitOK && stderr.Len() > 0 {
				t.Errorf("stderr = %q; want nothing on success", stderr.String())
			}
			if tt.wantOut == "healthy: " || tt.wantOut == "unhealthy: " {
				if n := strings.Count(out, "\n"); n != 1 {
					t.Errorf("printed %d lines; want 1:\n%s", n, out)
				}
			}
		})
	}
}

func TestReadyzURL(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, content)
		return p
	}
	const (
		fallback = "http://127.0.0.1:9091/readyz"
		on9200   = "http://127.0.0.1:9200/readyz"
	)

	tests := []struct {
		name string
		path string
		want string
	}{
		{"no config", "", fallback},
		{"missing file", filepath.Join(dir, "missing.yaml"), fallback},
		{"not YAML", file("broken.yaml", "admin_listen: [\n"), fallback},
		{"admin_listen left out", file("empty.yaml", "listen: 0.0.0.0:8080\n"), fallback},
		{"not host:port", file("noport.yaml", "admin_listen: localhost\n"), fallback},
		{"port 0", file("zero.yaml", "admin_listen: 127.0.0.1:0\n"), fallback},
		{"loopback", file("loop.yaml", "admin_listen: 127.0.0.1:9200\n"), on9200},
		{"IPv4 wildcard", file("any4.yaml", "admin_listen: 0.0.0.0:9200\n"), on9200},
		{"empty host", file("any.yaml", "admin_listen: :9200\n"), on9200},
		{"IPv6 wildcard", file("any6.yaml", "admin_listen: '[::]:9200'\n"), "http://[::1]:9200/readyz"},
		{"host name", file("name.yaml", "admin_listen: guacproxy.local:9200\n"),
			"http://guacproxy.local:9200/readyz"},
		{"other problems are ignored", file("invalid.yaml", "admin_listen: 127.0.0.1:9200\n"+
			"identities: [{name: x, password_env: UNSET_VARIABLE}]\nbogus: 1\n"), on9200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readyzURL(tt.path); got != tt.want {
				t.Errorf("readyzURL(%s) = %q; want %q", filepath.Base(tt.path), got, tt.want)
			}
		})
	}
}

func TestVersionNamesTheBuild(t *testing.T) {
	defer func(v, c, d string) { version, commit, buildDate = v, c, d }(version, commit, buildDate)
	version, commit, buildDate = "1.2.3", "abc1234", "2026-01-02T03:04:05Z"

	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out); code != exitOK {
		t.Fatalf("exit code = %d; want %d", code, exitOK)
	}
	if got, want := out.String(), "guacproxy 1.2.3 (abc1234, 2026-01-02T03:04:05Z)\n"; got != want {
		t.Errorf("version printed %q; want %q", got, want)
	}
}
