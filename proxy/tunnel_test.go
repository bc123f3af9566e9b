package proxy

import (
	"bufio"
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/guacproxy/guacproxy/tokencache"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// dialTunnel opens a WebSocket tunnel through the proxy.
func (e *env) dialTunnel(t *testing.T, query string, hdr http.Header) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"guacamole"}, HandshakeTimeout: 5 * time.Second}
	url := "ws" + strings.TrimPrefix(e.front.URL, "http") + "/websocket-tunnel?" + query
	conn, resp, err := d.Dial(url, hdr)
	if err != nil {
		t.Fatalf("dial tunnel: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { conn.Close() })
	if conn.Subprotocol() != "guacamole" {
		t.Errorf("subprotocol = %q; want guacamole", conn.Subprotocol())
	}
	return conn
}

// readInstruction reads one WebSocket message of Guacamole instructions.
func readInstruction(t *testing.T, conn *websocket.Conn) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read tunnel: %v", err)
	}
	return string(msg)
}

func TestWebSocketTunnelGetsTheIdentityToken(t *testing.T) {
	e := newEnv(t, envOptions{})
	query := "token=CLIENTTOKEN&GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c&GUAC_AUDIO=audio%2Fogg&token=AGAIN&GUAC_AUDIO=audio%2FL16&GUAC_WIDTH=800"
	conn := e.dialTunnel(t, query, nil)

	first := readInstruction(t, conn)
	if !strings.HasPrefix(first, "0.,36.") {
		t.Fatalf("first instruction = %q; want the tunnel UUID", first)
	}
	// The emulator echoes the internal ping: data flows both ways.
	if err := conn.WriteMessage(websocket.TextMessage, []byte("0.,4.ping,3.123;")); err != nil {
		t.Fatal(err)
	}
	for {
		if in := readInstruction(t, conn); strings.Contains(in, "4.ping,3.123;") {
			break
		}
	}

	live := e.emu.LiveTokens()
	tunnels := e.emu.Tunnels()
	if len(live) != 1 || len(tunnels) != 1 || tunnels[0].Token != live[0] {
		t.Fatalf("tunnel opened with %d tunnels / %d sessions; want one, with the identity's token",
			len(tunnels), len(live))
	}
	got := e.seen.last(t).URL.RawQuery
	want := "token=" + live[0] + "&GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c&GUAC_AUDIO=audio%2Fogg&GUAC_AUDIO=audio%2FL16&GUAC_WIDTH=800"
	if got != want {
		t.Errorf("query reaching Guacamole:\n got %s\nwant %s", redact(got, live[0]), redact(want, live[0]))
	}
	if open := e.proxy.OpenTunnels(); open["tool"] != 1 {
		t.Errorf("open tunnels = %v; want tool: 1", open)
	}
	conn.Close()
	waitFor(t, func() bool { return len(e.proxy.OpenTunnels()) == 0 })
}

// redact replaces the real token so that a failure message does not print it.
func redact(s, token string) string { return strings.ReplaceAll(s, token, "<TOKEN>") }

func TestTunnelHoldsItsTokenAcrossEvictionAndRotation(t *testing.T) {
	for _, tt := range []struct {
		name    string
		advance time.Duration
	}{
		{"idle eviction", tokencache.IdleLimit(tokencache.DefaultSessionTimeout)},
		{"max lifetime", tokencache.DefaultMaxLifetime},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := guacamoletest.NewClock(time.Now())
			e := newEnv(t, envOptions{clock: clock.Now})
			conn := e.dialTunnel(t, "GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c", nil)
			readInstruction(t, conn)
			tunnelToken := e.emu.Tunnels()[0].Token

			clock.Advance(tt.advance)
			e.cache.Sweep()
			if st := e.emu.Stats(); st.Revocations != 0 {
				t.Fatalf("revoked with the tunnel open: %d revocations", st.Revocations)
			}
			// New requests get a new token; the tunnel keeps working.
			if code, _ := e.self(t, nil, ""); code != http.StatusOK {
				t.Fatalf("request after eviction = %d", code)
			}
			if st := e.emu.Stats(); st.Logins != 2 {
				t.Errorf("logins = %d; want 2 (a new token for new requests)", st.Logins)
			}
			if got := e.seen.last(t).Header.Get("Guacamole-Token"); got == tunnelToken {
				t.Error("the retired token was handed to a new request")
			}
			if err := conn.WriteMessage(websocket.TextMessage, []byte("0.,4.ping,1.7;")); err != nil {
				t.Fatal(err)
			}
			for !strings.Contains(readInstruction(t, conn), "4.ping,1.7;") {
			}

			conn.Close()
			waitFor(t, func() bool { return e.emu.Stats().Revocations == 1 })
			if slices.Contains(e.emu.LiveTokens(), tunnelToken) {
				t.Error("the tunnel's token is still live after the tunnel closed")
			}
		})
	}
}

func TestHTTPTunnelThroughTheProxy(t *testing.T) {
	e := newEnv(t, envOptions{})
	form := "token=CLIENTTOKEN&GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c&token=AGAIN"
	resp, body := e.do(t, http.MethodPost, "/tunnel?connect",
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, strings.NewReader(form))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("connect = %d %s", resp.StatusCode, body)
	}
	uuid := string(body)
	tunnelToken := resp.Header.Get("Guacamole-Tunnel-Token")
	if tunnelToken == "" {
		t.Fatal("no Guacamole-Tunnel-Token in the connect answer")
	}
	live := e.emu.LiveTokens()
	if tunnels := e.emu.Tunnels(); len(tunnels) != 1 || tunnels[0].Token != live[0] || !tunnels[0].HTTP {
		t.Fatal("the HTTP tunnel was not opened with the identity's token")
	}
	if open := e.proxy.OpenTunnels(); open["tool"] != 1 {
		t.Errorf("open tunnels = %v; want tool: 1", open)
	}

	// A read streams instructions as they come, without waiting for the
	// response to end.
	req, _ := http.NewRequest(http.MethodGet, e.front.URL+"/tunnel?read:"+uuid+":0", nil)
	req.Header.Set("Guacamole-Tunnel-Token", tunnelToken)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	read, err := e.front.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer read.Body.Close()
	first, err := bufio.NewReader(read.Body).ReadString(';')
	if err != nil || !strings.HasPrefix(first, "4.size,") {
		t.Fatalf("first streamed instruction = %q (%v); want the display size", first, err)
	}

	// Errors of Guacamole's tunnel reach the client as they are.
	resp, _ = e.do(t, http.MethodGet, "/tunnel?read:"+uuid+":0",
		http.Header{"Guacamole-Tunnel-Token": {"not-the-tunnel-token"}}, nil)
	if resp.StatusCode == http.StatusOK || resp.Header.Get("Guacamole-Status-Code") == "" {
		t.Errorf("read with a wrong tunnel token = %d, status code %q; want Guacamole's error headers",
			resp.StatusCode, resp.Header.Get("Guacamole-Status-Code"))
	}
}

func TestConnectBodyIsBounded(t *testing.T) {
	e := newEnv(t, envOptions{})
	big := "GUAC_ID=" + strings.Repeat("x", maxConnectBody)
	resp, body := e.do(t, http.MethodPost, "/tunnel?connect",
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, strings.NewReader(big))
	if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Guacamole-Status-Code") == "" || len(body) != 0 {
		t.Errorf("oversized connect = %d, %q; want 413 with Guacamole's status header", resp.StatusCode, body)
	}
	if e.seen.count() != 0 {
		t.Error("an oversized connect reached Guacamole")
	}
}

// waitFor polls cond until it holds; the bound only keeps a broken test
// from hanging, no timing is asserted.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
