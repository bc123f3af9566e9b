package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/guacproxy/guacproxy/config"
)

// requireBrowserEnv, set to 1, turns a missing browser or JavaScript
// library into a failure, so that CI cannot skip the browser test silently.
const requireBrowserEnv = "GUACPROXY_REQUIRE_BROWSER"

// browserDir holds the test page and, after .ci/browser.sh, node_modules.
var browserDir = filepath.Join("testdata", "browser")

// guacamoleJS is the ES module build of guacamole-common-js.
var guacamoleJS = filepath.Join(browserDir,
	"node_modules", "guacamole-common-js", "dist", "esm", "guacamole-common.js")

// TestBrowserConnects runs Guacamole's own JavaScript client in headless
// Chromium against guacproxy, in front of the emulator as in the demo. The
// page's connect data carries no token: guacproxy must add its identity's.
func TestBrowserConnects(t *testing.T) {
	chromium := browserOrSkip(t)

	var logs syncBuffer
	logger, _ := newLogger(config.Log{Level: "info", Format: "console"}, &logs)
	cfg, emu := demoSetup("127.0.0.1:0", "127.0.0.1:0", logger)
	t.Cleanup(emu.Close)
	r := serve(t, newTestServer(t, cfg, logger))

	tests := []struct {
		name        string
		connectData string // empty for the page's default
	}{
		{"without a token", ""},
		// A token the page sends itself, as Guacamole's web UI does, must
		// not reach Guacamole: it would win over the one guacproxy adds.
		{"with a token of its own", "GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c&token=made-up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page := runPage(t, chromium, "ws://"+r.srv.proxyAddr()+"/websocket-tunnel", tt.connectData)
			if !strings.Contains(","+page.States+",", ",3,") {
				t.Errorf("got client states %q (tunnel states %q); want CONNECTED (3) among them",
					page.States, page.Tunnel)
			}
			if page.Resized != "800x600" {
				t.Errorf("got display %q after asking for 800x600; want 800x600", page.Resized)
			}
			if page.Err != "" {
				t.Errorf("got error %q; want none", page.Err)
			}
			if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(page.UUID) {
				t.Errorf("got tunnel UUID %q; want a UUID", page.UUID)
			}
			// The page disconnected at the end, which closes the tunnel.
			waitFor(t, func() bool { return emu.Stats().OpenTunnels == 0 })
		})
	}
	if st := emu.Stats(); st.TunnelsOpened != len(tests) || st.Logins != 1 {
		t.Errorf("emulator: tunnels opened=%d logins=%d; want %d and 1",
			st.TunnelsOpened, st.Logins, len(tests))
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if guacamoleToken.MatchString(logs.String()) {
		t.Errorf("a Guacamole token appears in the logs:\n%s", logs.String())
	}
}

// browserOrSkip returns the Chromium to run, skipping the test when Chromium
// or guacamole-common-js is missing, unless requireBrowserEnv is 1.
func browserOrSkip(t *testing.T) string {
	t.Helper()
	missing := func(what string) {
		t.Helper()
		if os.Getenv(requireBrowserEnv) == "1" {
			t.Fatalf("%s; run .ci/browser.sh (%s=1 forbids skipping)", what, requireBrowserEnv)
		}
		t.Skipf("%s; run .ci/browser.sh to enable this test", what)
	}

	chromium, err := exec.LookPath("chromium")
	if err != nil {
		missing("chromium is not installed")
	}
	if _, err := os.Stat(guacamoleJS); err != nil {
		missing("guacamole-common-js is not installed in " + browserDir)
	}
	return chromium
}

// pageResult is what the test page wrote into its DOM.
type pageResult struct {
	States  string `json:"states"`
	Tunnel  string `json:"tunnel"`
	UUID    string `json:"uuid"`
	Resized string `json:"resized"`
	Err     string `json:"error"`
	Done    string `json:"done"`
}

// pageFields is evaluated in the page to read its result elements.
const pageFields = `JSON.stringify(Object.fromEntries(
	["states", "tunnel", "uuid", "resized", "error", "done"].map(
		(id) => [id, document.getElementById(id)?.textContent ?? ""])))`

// runPage serves the test page, has headless Chromium open it with the
// given tunnel URL and connect data (empty for the page's default), and
// reads the page's DOM over the DevTools protocol until the page says it is
// done. Polling in real time, rather than dumping the DOM after a virtual
// time budget, keeps the browser's timers in step with the network.
func runPage(t *testing.T, chromium, tunnelURL, connectData string) pageResult {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(browserDir, "index.html"))
	})
	mux.HandleFunc("GET /guacamole-common.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, guacamoleJS)
	})
	pages := httptest.NewServer(mux)
	defer pages.Close()

	q := url.Values{"tunnel": {tunnelURL}}
	if connectData != "" {
		q.Set("connect", connectData)
	}
	pageURL := pages.URL + "/?" + q.Encode()
	profile, err := os.MkdirTemp("", "guacproxy-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	// Chromium's helpers may still be writing as it exits; a leftover
	// profile is not worth failing for.
	defer os.RemoveAll(profile)

	cmd := exec.Command(chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir="+profile, "--remote-debugging-port=0",
		pageURL)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	devtools := devToolsPage(t, profile, pageURL, &stderr)
	defer func() {
		// Closing the browser, rather than killing it, lets it reap its
		// helper processes. The wait is bounded in case it does not exit.
		_ = devtools.WriteJSON(map[string]any{"id": 0, "method": "Browser.close"})
		devtools.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	}()

	// The deadline only keeps a broken page from hanging the test.
	var res pageResult
	deadline := time.Now().Add(time.Minute)
	for id := 1; ; id++ {
		raw := evaluate(t, devtools, id, pageFields)
		if err := json.Unmarshal([]byte(raw), &res); err != nil {
			t.Fatalf("page fields %q: %v", raw, err)
		}
		if res.Done == "yes" {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page did not finish; it shows %+v", res)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// devToolsPage connects to the DevTools endpoint of the Chromium page
// showing pageURL.
func devToolsPage(t *testing.T, profile, pageURL string, stderr *syncBuffer) *websocket.Conn {
	t.Helper()
	// Chromium writes its DevTools port to the profile once it listens.
	var port string
	waitFor(t, func() bool {
		b, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		port, _, _ = strings.Cut(string(b), "\n")
		return err == nil && port != ""
	})

	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	var wsURL string
	waitFor(t, func() bool {
		resp, err := client.Get("http://127.0.0.1:" + port + "/json/list")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var targets []struct {
			Type, URL            string
			WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.URL == pageURL {
				wsURL = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})

	conn, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("DevTools: %v\n%s", err, stderr.String())
	}
	return conn
}

// evaluate runs a JavaScript expression that yields a string in the page
// and returns that string.
func evaluate(t *testing.T, conn *websocket.Conn, id int, expr string) string {
	t.Helper()
	req := map[string]any{
		"id":     id,
		"method": "Runtime.evaluate",
		"params": map[string]any{"expression": expr, "returnByValue": true},
	}
	if err := conn.WriteJSON(req); err != nil {
		t.Fatalf("DevTools: %v", err)
	}
	// A guard against a wedged browser, not a timing assertion.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var resp struct {
			ID     int `json:"id"`
			Result struct {
				Result struct {
					Value string `json:"value"`
				} `json:"result"`
			} `json:"result"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := conn.ReadJSON(&resp); err != nil {
			t.Fatalf("DevTools: %v", err)
		}
		if resp.ID != id {
			continue // an event, or the answer to an earlier call
		}
		if resp.Error != nil {
			t.Fatalf("DevTools: Runtime.evaluate: %s", resp.Error.Message)
		}
		return resp.Result.Result.Value
	}
}
