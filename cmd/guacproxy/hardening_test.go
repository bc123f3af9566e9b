package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/config"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// startServer runs guacproxy in front of a fresh emulator until the test
// ends. adjust may change the servers before they start.
func startServer(t *testing.T, adjust func(s *server)) *server {
	t.Helper()
	emu := guacamoletest.NewServer(guacamoletest.Options{
		Users: map[string]guacamoletest.User{"svc-tool": {Password: "hardening-pw"}},
	})
	t.Cleanup(emu.Close)
	srv := newTestServer(t, toolConfig(t, emu.URL, "hardening-pw", nil), zap.NewNop())
	if adjust != nil {
		adjust(srv)
	}
	return serve(t, srv).srv
}

func TestOversizedHeadersAreRefused(t *testing.T) {
	srv := startServer(t, nil)
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.proxyAddr()+"/api/session/data/default/self", nil)
	req.Header.Set("X-Padding", strings.Repeat("a", 2*maxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status = %d; want 431", resp.StatusCode)
	}
}

// A client that never finishes its headers is disconnected rather than
// holding a connection forever.
func TestSlowClientIsDisconnected(t *testing.T) {
	srv := startServer(t, func(s *server) { s.proxy.ReadHeaderTimeout = 100 * time.Millisecond })
	conn, err := net.Dial("tcp", srv.proxyAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /api/session/data/default/self HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// The read ends when the server gives up on the headers; the deadline
	// only keeps a broken server from hanging the test.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("an incomplete request was served")
		}
		return
	}
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the connection of a client that never finished its headers")
	}
}

func TestAdminServesMetrics(t *testing.T) {
	srv := startServer(t, nil)
	if got := status(t, "http://"+srv.proxyAddr()+"/api/session/data/default/self"); got != http.StatusOK {
		t.Fatalf("request = %d; want 200", got)
	}
	resp, err := http.Get("http://" + srv.adminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`guacproxy_requests_total{code="200",identity="tool"} 1`,
		`guacproxy_logins_total{identity="tool",result="ok"} 1`,
		`guacproxy_logins_total{identity="tool",result="banned"} 0`,
		`guacproxy_tokens_live 1`,
		`guacproxy_tunnels_open{identity="tool"} 0`,
		`guacproxy_revocations_total{result="ok"} 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), "hardening-pw") {
		t.Error("/metrics contains the password")
	}
}

// TestShutdownClosesTunnelsAfterGrace: http.Server.Shutdown does not wait
// for hijacked WebSocket tunnels, so guacproxy waits for them itself, then
// closes them and revokes their token.
func TestShutdownClosesTunnelsAfterGrace(t *testing.T) {
	emu := guacamoletest.NewServer(guacamoletest.Options{
		Users: map[string]guacamoletest.User{"svc-tool": {Password: "tunnel-pw"}},
	})
	t.Cleanup(emu.Close)
	cfg := toolConfig(t, emu.URL, "tunnel-pw", func(c *config.Config) {
		c.ShutdownGrace = 300 * time.Millisecond
	})
	r := serve(t, newTestServer(t, cfg, zap.NewNop()))

	conn, resp, err := websocket.DefaultDialer.Dial(
		"ws://"+r.srv.proxyAddr()+"/websocket-tunnel?GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer conn.Close()
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the tunnel is still open after shutdown")
			}
			break
		}
	}
	if st := emu.Stats(); st.LiveSessions != 0 || st.OpenTunnels != 0 {
		t.Errorf("after shutdown: live sessions=%d open tunnels=%d; want 0 and 0", st.LiveSessions, st.OpenTunnels)
	}
}
