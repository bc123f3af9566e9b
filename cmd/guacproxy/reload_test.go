package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/guacproxy/guacproxy/config"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// reloadEnv is guacproxy serving from a configuration file that a test
// rewrites while it runs.
type reloadEnv struct {
	emu     *guacamoletest.Server
	srv     *server
	dir     string
	cfgPath string
	logs    *syncBuffer
	tokens  sync.Map // every token Guacamole saw
}

const reloadConfig = `
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
guacamole: {url: %s}
identities:
  - name: tool
    username: svc-tool
    password_file: %s
    default: true
  - name: reporting
    username: svc-reporting
    password_env: GUACPROXY_TEST_REPORTING_PW
    api_keys_sha256: [%s]
`

func newReloadEnv(t *testing.T) *reloadEnv { return newReloadEnvAt(t, nil) }

// newReloadEnvAt is newReloadEnv; mount, if not nil, places the written
// configuration where guacproxy reads it and returns that path.
func newReloadEnvAt(t *testing.T, mount func(e *reloadEnv) string) *reloadEnv {
	t.Helper()
	e := &reloadEnv{dir: t.TempDir(), logs: &syncBuffer{}}
	t.Setenv("GUACPROXY_TEST_REPORTING_PW", "reporting-pw-1")
	e.emu = guacamoletest.NewServer(guacamoletest.Options{
		Users: map[string]guacamoletest.User{
			"svc-tool":      {Password: "tool-pw-1"},
			"svc-reporting": {Password: "reporting-pw-1"},
		},
		Observe: func(r *http.Request) {
			if tok := r.Header.Get("Guacamole-Token"); tok != "" {
				e.tokens.Store(tok, true)
			}
		},
	})
	t.Cleanup(e.emu.Close)
	e.cfgPath = filepath.Join(e.dir, "guacproxy.yaml")
	e.writeAtomic(t, "tool-password", "tool-pw-1\n")
	e.writeConfig(t, "")

	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	logger, _ := newLogger(config.Log{Level: "info", Format: "json"}, e.logs)
	t.Cleanup(func() {
		// Runs after the server stopped: cleanups run last-in first-out.
		for _, secret := range []string{"tool-pw-1", "tool-pw-2", "reporting-pw-1", "reporting-key"} {
			if strings.Contains(e.logs.String(), secret) {
				t.Errorf("the logs contain the secret %q", secret)
			}
		}
	})
	e.srv = newTestServer(t, cfg, logger)
	e.srv.configPath = e.cfgPath
	if mount != nil {
		e.srv.configPath = mount(e)
	}
	serve(t, e.srv)
	return e
}

// writeAtomic replaces a file in the test directory the way editors and
// Kubernetes do: write elsewhere, then rename over it.
func (e *reloadEnv) writeAtomic(t *testing.T, name, content string) {
	t.Helper()
	tmp := filepath.Join(e.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
		t.Fatal(err)
	}
}

// writeConfig writes the configuration with extra appended.
func (e *reloadEnv) writeConfig(t *testing.T, extra string) {
	t.Helper()
	e.writeAtomic(t, "guacproxy.yaml", fmt.Sprintf(reloadConfig, e.emu.URL,
		filepath.Join(e.dir, "tool-password"), config.HashAPIKey("reporting-key"))+extra)
}

func (e *reloadEnv) get(t *testing.T, hdr http.Header) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.srv.proxyAddr()+"/api/session/data/default/self", nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// reloads counts the reloads logged so far.
func (e *reloadEnv) reloads() int { return strings.Count(e.logs.String(), "configuration reloaded") }

func (e *reloadEnv) rejections() int {
	return strings.Count(e.logs.String(), "configuration rejected")
}

// TestRotatedPasswordFileMidTraffic is a reliability drill: the password
// file of an identity is replaced while requests flow. No request fails, the
// old token is revoked and the new password is used.
func TestRotatedPasswordFileMidTraffic(t *testing.T) {
	e := newReloadEnv(t)
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				if e.get(t, nil) != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	waitFor(t, func() bool { return sent.Load() > 50 })
	oldTokens := e.emu.LiveTokens()

	// Rotation as operators do it: Guacamole first, then the secret.
	e.emu.SetUser("svc-tool", guacamoletest.User{Password: "tool-pw-2"})
	e.writeAtomic(t, "tool-password", "tool-pw-2\n")
	waitFor(t, func() bool { return e.reloads() >= 1 })
	waitFor(t, func() bool { return e.emu.Stats().Revocations >= 1 })
	before := sent.Load()
	waitFor(t, func() bool { return sent.Load() > before+50 })
	close(stop)
	wg.Wait()

	st := e.emu.Stats()
	t.Logf("drill: %d requests during a password rotation, %d failed; logins=%d revocations=%d",
		sent.Load(), failed.Load(), st.Logins, st.Revocations)
	if failed.Load() != 0 {
		t.Errorf("%d requests failed during the rotation; want 0", failed.Load())
	}
	for _, old := range oldTokens {
		if slices.Contains(e.emu.LiveTokens(), old) {
			t.Error("the token of the old password is still live")
		}
	}
	if st.Logins != 2 || st.FailedLogins != 0 {
		t.Errorf("logins=%d failed=%d; want 2 and 0", st.Logins, st.FailedLogins)
	}
}

func TestInvalidReloadKeepsTheOldConfiguration(t *testing.T) {
	e := newReloadEnv(t)
	if got := e.get(t, nil); got != http.StatusOK {
		t.Fatalf("before: %d", got)
	}
	e.writeConfig(t, "  - name: Bad Name\n    username: ''\nbogus: 1\n")
	waitFor(t, func() bool { return e.rejections() >= 1 })
	for _, want := range []string{"identities[2].name", "identities[2].username", "bogus"} {
		if !strings.Contains(e.logs.String(), want) {
			t.Errorf("the rejection does not name %s", want)
		}
	}
	if got := e.get(t, nil); got != http.StatusOK {
		t.Errorf("after a rejected reload: %d; want 200", got)
	}
	if st := e.emu.Stats(); st.Logins != 1 || st.Revocations != 0 {
		t.Errorf("logins=%d revocations=%d; want 1 and 0", st.Logins, st.Revocations)
	}
}

func TestReloadRemovesAndKeepsIdentities(t *testing.T) {
	e := newReloadEnv(t)
	key := http.Header{"Authorization": {"Bearer reporting-key"}}
	if e.get(t, key) != http.StatusOK || e.get(t, nil) != http.StatusOK {
		t.Fatal("requests before the reload failed")
	}

	// Drop reporting and make tool the only identity, no longer default.
	e.writeAtomic(t, "guacproxy.yaml", fmt.Sprintf(`
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
guacamole: {url: %s}
identities:
  - name: tool
    username: svc-tool
    password_file: %s
    api_keys_sha256: [%s]
`, e.emu.URL, filepath.Join(e.dir, "tool-password"), config.HashAPIKey("tool-key")))
	waitFor(t, func() bool { return e.reloads() >= 1 })
	waitFor(t, func() bool { return e.emu.Stats().Revocations == 1 })

	if got := e.get(t, key); got != http.StatusUnauthorized {
		t.Errorf("removed identity's key: %d; want 401", got)
	}
	if got := e.get(t, http.Header{"Authorization": {"Bearer tool-key"}}); got != http.StatusOK {
		t.Errorf("tool's new key: %d; want 200", got)
	}
	if st := e.emu.Stats(); st.Logins != 2 || st.LiveSessions != 1 {
		t.Errorf("logins=%d live=%d; want 2 and 1: tool keeps its token", st.Logins, st.LiveSessions)
	}
}

// TestSymlinkSwapIsSeen plays a Kubernetes ConfigMap update: the file is a
// symlink into a directory that is swapped by renaming a ..data link.
func TestSymlinkSwapIsSeen(t *testing.T) {
	var mountDir string
	e := newReloadEnvAt(t, func(e *reloadEnv) string {
		mountDir = filepath.Join(e.dir, "mount")
		v1, v2 := filepath.Join(mountDir, "..v1"), filepath.Join(mountDir, "..v2")
		content, err := os.ReadFile(e.cfgPath)
		must(t, err)
		for _, d := range []string{v1, v2} {
			must(t, os.MkdirAll(d, 0o755))
		}
		must(t, os.WriteFile(filepath.Join(v1, "guacproxy.yaml"), content, 0o600))
		must(t, os.WriteFile(filepath.Join(v2, "guacproxy.yaml"), append(content, "shutdown_grace: 1s\n"...), 0o600))
		must(t, os.Symlink("..v1", filepath.Join(mountDir, "..data")))
		must(t, os.Symlink("..data/guacproxy.yaml", filepath.Join(mountDir, "guacproxy.yaml")))
		return filepath.Join(mountDir, "guacproxy.yaml")
	})
	// Give the watch a moment to be in place; nothing is asserted on time.
	waitFor(t, func() bool { return e.get(t, nil) == http.StatusOK })

	must(t, os.Symlink("..v2", filepath.Join(mountDir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(mountDir, "..data_tmp"), filepath.Join(mountDir, "..data")))
	waitFor(t, func() bool { return e.reloads() >= 1 })
}

// TestSIGHUPReloads sends the process a real SIGHUP while guacproxy serve
// runs.
func TestSIGHUPReloads(t *testing.T) {
	dir := t.TempDir()
	emu := guacamoletest.NewServer(guacamoletest.Options{
		Users: map[string]guacamoletest.User{"svc-tool": {Password: "hup-pw"}},
	})
	defer emu.Close()
	t.Setenv("GUACPROXY_TEST_HUP_PW", "hup-pw")
	path := filepath.Join(dir, "guacproxy.yaml")
	admin := freeAddr(t)
	writeFile(t, path, fmt.Sprintf(`
listen: %s
admin_listen: %s
guacamole: {url: %s}
identities: [{name: tool, username: svc-tool, password_env: GUACPROXY_TEST_HUP_PW, default: true}]
`, freeAddr(t), admin, emu.URL))

	var out syncBuffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"serve", "--config", path}, &out, &out) }()
	waitFor(t, func() bool { return status(t, "http://"+admin+"/readyz") == http.StatusOK })

	must(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	waitFor(t, func() bool { return strings.Contains(out.String(), "configuration reloaded") })
	must(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit code = %d; want 0\n%s", code, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("guacproxy serve did not stop on SIGTERM")
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
