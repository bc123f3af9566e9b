package guacamoletest_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// connectParams are the parameters the web UI sends to connect to sample
// connection 1.
func connectParams(token string) url.Values {
	v := url.Values{
		"GUAC_DATA_SOURCE": {"default"},
		"GUAC_ID":          {"1"},
		"GUAC_TYPE":        {"c"},
	}
	if token != "" {
		v.Set("token", token)
	}
	return v
}

// wsClient is a WebSocket tunnel client that reads whole instructions.
type wsClient struct {
	t       *testing.T
	conn    *websocket.Conn
	pending [][]string
}

// dialTunnel opens {base}/websocket-tunnel?rawQuery with the guacamole
// subprotocol and the given extra request header.
func dialTunnel(t *testing.T, srv *guacamoletest.Server, rawQuery string, h http.Header) *wsClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/websocket-tunnel?" + rawQuery
	d := websocket.Dialer{Subprotocols: []string{"guacamole"}}
	conn, resp, err := d.Dial(u, h)
	if err != nil {
		t.Fatalf("dial websocket-tunnel: %v", err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "guacamole" {
		t.Errorf("got subprotocol %q; want guacamole", got)
	}
	t.Cleanup(func() { conn.Close() })
	// A guard against a hung test, not a timing assertion.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	return &wsClient{t: t, conn: conn}
}

// next returns the next instruction, failing the test if the tunnel ends.
func (c *wsClient) next() []string {
	c.t.Helper()
	for len(c.pending) == 0 {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			c.t.Fatalf("read from tunnel: %v", err)
		}
		r := bufio.NewReader(strings.NewReader(string(data)))
		for {
			in, err := readInstruction(r)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				c.t.Fatalf("message %q: %v", data, err)
			}
			c.pending = append(c.pending, in)
		}
	}
	in := c.pending[0]
	c.pending = c.pending[1:]
	return in
}

// expect returns the next instruction with the given opcode. Looking for
// anything but sync, it skips the syncs an idle tunnel sends; looking for
// anything but the internal opcode, it skips the tunnel's UUID.
func (c *wsClient) expect(op string) []string {
	c.t.Helper()
	for {
		in := c.next()
		if op != "sync" && in[0] == "sync" || op != "" && in[0] == "" && len(in) == 2 {
			continue
		}
		if in[0] != op {
			c.t.Fatalf("got instruction %q; want opcode %q", in, op)
		}
		return in
	}
}

// send writes raw protocol text as one message.
func (c *wsClient) send(text string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		c.t.Fatalf("write to tunnel: %v", err)
	}
}

// closed reads until the server closes the tunnel and returns the close
// code and reason, and the instructions that came before the close.
func (c *wsClient) closed() (code int, reason string, before [][]string) {
	c.t.Helper()
	before, c.pending = c.pending, nil
	for {
		_, data, err := c.conn.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text, before
		}
		if err != nil {
			c.t.Fatalf("read from tunnel: got %v; want a close frame", err)
		}
		before = append(before, []string{string(data)})
	}
}

// readInstruction reads one instruction, counting element lengths in
// Unicode code points. It returns io.EOF only between instructions.
func readInstruction(r *bufio.Reader) ([]string, error) {
	var elements []string
	for {
		lenText, err := r.ReadString('.')
		if errors.Is(err, io.EOF) && lenText == "" && elements == nil {
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("element length: %w", err)
		}
		n, err := strconv.Atoi(strings.TrimSuffix(lenText, "."))
		if err != nil {
			return nil, fmt.Errorf("element length %q: %w", lenText, err)
		}
		var b strings.Builder
		for range n {
			ch, _, err := r.ReadRune()
			if err != nil {
				return nil, fmt.Errorf("element: %w", err)
			}
			b.WriteRune(ch)
		}
		elements = append(elements, b.String())
		term, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("terminator: %w", err)
		}
		switch term {
		case ',':
		case ';':
			return elements, nil
		default:
			return nil, fmt.Errorf("got terminator %q after %q", term, elements)
		}
	}
}

// equal reports whether instruction in is exactly want.
func equal(in []string, want ...string) bool { return slices.Equal(in, want) }

func TestWebSocketTunnelConnects(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now})
	token := mustLogin(t, srv, "alice", "alice-pw")
	params := connectParams(token)
	params.Set("GUAC_WIDTH", "1280")
	params.Set("GUAC_HEIGHT", "720")
	params.Add("GUAC_AUDIO", "audio/L16")

	c := dialTunnel(t, srv, params.Encode(), nil)
	// What a real tunnel sends first: its UUID in-band, then the display.
	uuid := c.next()
	tunnels := srv.Tunnels()
	if len(tunnels) != 1 {
		t.Fatalf("got %d open tunnels; want 1", len(tunnels))
	}
	tun := tunnels[0]
	if tun.Token != token || tun.HTTP || tun.DataSource != "default" || tun.Type != "c" || tun.ID != "1" {
		t.Errorf("got tunnel {HTTP:%v DataSource:%q Type:%q ID:%q}, token matches: %v; "+
			"want a WebSocket tunnel to default/c/1 with the login's token",
			tun.HTTP, tun.DataSource, tun.Type, tun.ID, tun.Token == token)
	}
	if _, ok := tun.Params["token"]; ok {
		t.Error("TunnelInfo.Params holds the token")
	}
	if got := tun.Params["GUAC_AUDIO"]; !slices.Equal(got, []string{"audio/L16"}) {
		t.Errorf("got GUAC_AUDIO %q; want [audio/L16]", got)
	}

	if !equal(uuid, "", tun.UUID) {
		t.Fatalf("got first instruction %q; want the tunnel's UUID", uuid)
	}
	ts := strconv.FormatInt(clock.Now().UnixMilli(), 10)
	for _, want := range [][]string{
		{"size", "0", "1280", "720"},
		{"sync", ts},
	} {
		if got := c.next(); !equal(got, want...) {
			t.Fatalf("got instruction %q; want %q", got, want)
		}
	}
	if st := srv.Stats(); st.OpenTunnels != 1 || st.TunnelsOpened != 1 {
		t.Errorf("got OpenTunnels=%d TunnelsOpened=%d; want 1 and 1", st.OpenTunnels, st.TunnelsOpened)
	}

	// The client's instructions and their answers, in one message or several.
	c.send("4.sync," + strconv.Itoa(len(ts)) + "." + ts + ";3.nop;")
	c.send("0.,4.ping,13.1767225600123;")
	if got := c.expect(""); !equal(got, "", "ping", "1767225600123") {
		t.Errorf("got %q; want the ping echoed", got)
	}
	c.send("4.size,3.800,3.600;0.,4.ping,4.é€🙂x;")
	if got := c.expect("size"); !equal(got, "size", "0", "800", "600") {
		t.Errorf("got %q; want size 0,800,600", got)
	}
	if got := c.expect("sync"); !equal(got, "sync", ts) {
		t.Errorf("got %q; want sync %s after the resize", got, ts)
	}
	if got := c.expect(""); !equal(got, "", "ping", "é€🙂x") {
		t.Errorf("got %q; want the ping echoed with its code point length", got)
	}

	// Malformed input is dropped; the tunnel stays usable.
	c.send("4.size,9.800;")
	c.send("10.disconnect;")
	if got := c.expect("disconnect"); !equal(got, "disconnect") {
		t.Errorf("got %q; want disconnect", got)
	}
	code, reason, _ := c.closed()
	if code != websocket.CloseNormalClosure || reason != "0" {
		t.Errorf("got close %d %q; want 1000 \"0\"", code, reason)
	}
	waitFor(t, func() bool { return srv.Stats().OpenTunnels == 0 })
	if got := srv.Tunnels(); len(got) != 0 {
		t.Errorf("got %d open tunnels after disconnect; want 0", len(got))
	}
}

func TestWebSocketTunnelRefused(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")
	bad := strings.Repeat("0", 64)
	base := "GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c"

	tests := []struct {
		name       string
		query      string
		header     http.Header
		wantCode   int
		wantReason string
	}{
		{"unknown token", base + "&token=" + bad, nil, 1008, "769"},
		{"no token", base, nil, 1008, "769"},
		{"empty token", base + "&token=", nil, 1008, "769"},
		{"token in header only", base, http.Header{"Guacamole-Token": {token}}, 1008, "769"},
		{"good token in header, bad in query", base + "&token=" + bad,
			http.Header{"Guacamole-Token": {token}}, 1008, "769"},
		{"bad token first", base + "&token=" + bad + "&token=" + token, nil, 1008, "769"},
		{"TOKEN is another parameter", base + "&TOKEN=" + token, nil, 1008, "769"},
		{"unknown connection", "GUAC_DATA_SOURCE=default&GUAC_ID=99&GUAC_TYPE=c&token=" + token,
			nil, 1002, "516"},
		{"unknown data source", "GUAC_DATA_SOURCE=mysql&GUAC_ID=1&GUAC_TYPE=c&token=" + token,
			nil, 1002, "516"},
		{"organizational group", "GUAC_DATA_SOURCE=default&GUAC_ID=ROOT&GUAC_TYPE=g&token=" + token,
			nil, 1008, "771"},
		{"active connection", "GUAC_DATA_SOURCE=default&GUAC_ID=x&GUAC_TYPE=a&token=" + token,
			nil, 1002, "516"},
		{"no GUAC_ID, even with a bad token", "GUAC_DATA_SOURCE=default&GUAC_TYPE=c&token=" + bad,
			nil, 1002, "768"},
		{"unknown type", "GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=z&token=" + token,
			nil, 1002, "768"},
		{"bad width", base + "&GUAC_WIDTH=wide&token=" + token, nil, 1002, "768"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialTunnel(t, srv, tt.query, tt.header)
			code, reason, before := c.closed()
			if code != tt.wantCode || reason != tt.wantReason {
				t.Errorf("got close %d %q; want %d %q", code, reason, tt.wantCode, tt.wantReason)
			}
			if len(before) != 0 {
				t.Errorf("got %d messages before the close; want none", len(before))
			}
		})
	}

	if st := srv.Stats(); st.OpenTunnels != 0 || st.TunnelsOpened != 0 {
		t.Errorf("got OpenTunnels=%d TunnelsOpened=%d; want 0 and 0", st.OpenTunnels, st.TunnelsOpened)
	}
	// A refused destination is still a use of a valid token, and leaves it valid.
	if got := srv.LiveTokens(); !slices.Equal(got, []string{token}) {
		t.Errorf("got %d live tokens; want only the login's", len(got))
	}
}

func TestWebSocketTunnelFirstTokenWins(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")
	query := connectParams(token).Encode() + "&token=" + strings.Repeat("0", 64)

	c := dialTunnel(t, srv, query, nil)
	if got := c.next(); len(got) != 2 || got[0] != "" {
		t.Fatalf("got %q; want the tunnel's UUID", got)
	}
	tunnels := srv.Tunnels()
	if len(tunnels) != 1 || tunnels[0].Token != token {
		t.Errorf("got %d tunnels; want one opened with the first token", len(tunnels))
	}
}

func TestWebSocketTunnelNotAnUpgrade(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")
	resp := get(t, srv, "/websocket-tunnel?"+connectParams(token).Encode(), "")
	if resp.status != http.StatusBadRequest {
		t.Errorf("got status %d; want 400", resp.status)
	}
	if st := srv.Stats(); st.TunnelsOpened != 0 {
		t.Errorf("got TunnelsOpened=%d; want 0", st.TunnelsOpened)
	}
}

func TestRevocationClosesTunnels(t *testing.T) {
	tests := []struct {
		name   string
		revoke func(t *testing.T, srv *guacamoletest.Server, token string) response
	}{
		{"DELETE /api/tokens/{token}", func(t *testing.T, srv *guacamoletest.Server, token string) response {
			return withToken(t, srv, http.MethodDelete, "/api/tokens/"+token, "")
		}},
		{"DELETE /api/session", func(t *testing.T, srv *guacamoletest.Server, token string) response {
			return withToken(t, srv, http.MethodDelete, "/api/session", token)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, guacamoletest.Options{})
			token := mustLogin(t, srv, "alice", "alice-pw")
			other := mustLogin(t, srv, "alice", "alice-pw")

			ws := dialTunnel(t, srv, connectParams(token).Encode(), nil)
			ws.expect("size")
			h := httpConnect(t, srv, connectParams(token))
			read := h.read(t, 0)
			read.expect(t, "size")
			kept := dialTunnel(t, srv, connectParams(other).Encode(), nil)
			kept.expect("size")
			if got := srv.Stats().OpenTunnels; got != 3 {
				t.Fatalf("got %d open tunnels; want 3", got)
			}

			if resp := tt.revoke(t, srv, token); resp.status != http.StatusNoContent {
				t.Fatalf("revoke: got status %d; want 204", resp.status)
			}
			if code, reason, _ := ws.closed(); code != 1000 || reason != "0" {
				t.Errorf("WebSocket tunnel: got close %d %q; want 1000 \"0\"", code, reason)
			}
			read.expectEnd(t)
			if resp := h.readOnce(t, 1); resp.status != http.StatusNotFound {
				t.Errorf("HTTP tunnel read after revocation: got status %d; want 404", resp.status)
			}

			tunnels := srv.Tunnels()
			if len(tunnels) != 1 || tunnels[0].Token != other {
				t.Errorf("got %d open tunnels; want only the other token's", len(tunnels))
			}
			kept.send("4.size,3.640,3.480;")
			kept.expect("size")
		})
	}
}

func TestOpenTunnelKeepsSessionAlive(t *testing.T) {
	clock := newFakeClock()
	srv := newServer(t, guacamoletest.Options{Clock: clock.Now, SessionTimeout: time.Hour})
	token := mustLogin(t, srv, "alice", "alice-pw")

	clock.Advance(59 * time.Minute)
	c := dialTunnel(t, srv, connectParams(token).Encode(), nil) // resets the idle timer
	c.expect("size")

	clock.Advance(3 * time.Hour)
	srv.ExpireIdle()
	if got := srv.LiveTokens(); !slices.Equal(got, []string{token}) {
		t.Fatalf("with a tunnel open: got %d live tokens; want 1", len(got))
	}
	if resp := get(t, srv, "/api/session/data/default/self", token); resp.status != http.StatusOK {
		t.Fatalf("with a tunnel open: got status %d; want 200", resp.status)
	}

	// Closing the tunnel is a use too: the session has a full timeout left.
	closedAt := clock.Now()
	if err := c.conn.WriteMessage(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return srv.Stats().OpenTunnels == 0 })

	clock.Advance(time.Hour - time.Second)
	srv.ExpireIdle()
	if got := srv.Stats().LiveSessions; got != 1 {
		t.Fatalf("%v after the tunnel closed: got %d live sessions; want 1",
			clock.Now().Sub(closedAt), got)
	}
	clock.Advance(time.Second)
	srv.ExpireIdle()
	if got := srv.Stats().LiveSessions; got != 0 {
		t.Errorf("a timeout after the tunnel closed: got %d live sessions; want 0", got)
	}
}

func TestRestartAndCloseEndTunnels(t *testing.T) {
	srv := newServer(t, guacamoletest.Options{})
	token := mustLogin(t, srv, "alice", "alice-pw")
	c := dialTunnel(t, srv, connectParams(token).Encode(), nil)
	c.expect("size")

	srv.Restart()
	if code, _, _ := c.closed(); code != websocket.CloseGoingAway {
		t.Errorf("after Restart: got close %d; want 1001", code)
	}
	if st := srv.Stats(); st.OpenTunnels != 0 || st.LiveSessions != 0 {
		t.Errorf("after Restart: got OpenTunnels=%d LiveSessions=%d; want 0 and 0",
			st.OpenTunnels, st.LiveSessions)
	}

	token = mustLogin(t, srv, "alice", "alice-pw")
	c = dialTunnel(t, srv, connectParams(token).Encode(), nil)
	c.expect("size")
	srv.Close() // returns only once the tunnel's handler has
	if code, _, _ := c.closed(); code != websocket.CloseGoingAway {
		t.Errorf("after Close: got close %d; want 1001", code)
	}
}

// waitFor polls cond until it holds. The deadline only keeps a broken test
// from hanging; no timing is asserted.
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
