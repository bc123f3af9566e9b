package guacamoletest

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// wsWriteWait bounds each write to a WebSocket client.
	wsWriteWait = 10 * time.Second
	// wsCloseGrace is how long the server waits for the client to answer
	// its close frame before dropping the connection.
	wsCloseGrace = 5 * time.Second
	// wsMaxMessage bounds a message from the client.
	wsMaxMessage = 1 << 20
)

// upgrader accepts the WebSocket tunnel's handshake as Guacamole does: the
// "guacamole" subprotocol when the client offers it, and any origin.
var upgrader = websocket.Upgrader{
	Subprotocols: []string{"guacamole"},
	CheckOrigin:  func(*http.Request) bool { return true },
}

// serveWebSocketTunnel handles GET {base}/websocket-tunnel. The handshake
// always succeeds; a request that cannot open a tunnel is then closed with
// the WebSocket code of its Guacamole status and the Guacamole status code
// as the reason, and no instruction. A request that is not a WebSocket
// handshake gets the WebSocket library's plain 400 or 405.
func (s *Server) serveWebSocketTunnel(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	entered := s.enterTunnelLocked()
	s.mu.Unlock()
	if !entered {
		http.Error(w, "503 server closed", http.StatusServiceUnavailable)
		return
	}
	defer s.handlers.Done()

	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered with an HTTP error
	}
	defer conn.Close()

	req, terr := parseTunnelRequest(r.URL.Query())
	var t *tunnel
	if terr == nil {
		t, terr = s.openTunnel(req, false)
	}
	if terr != nil {
		msg := websocket.FormatCloseMessage(terr.status.ws, strconv.Itoa(terr.status.guac))
		_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wsWriteWait))
		awaitClose(conn)
		return
	}

	written := make(chan struct{})
	go func() {
		defer close(written)
		s.writeWebSocket(conn, t)
	}()
	conn.SetReadLimit(wsMaxMessage)
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			break
		}
		if typ == websocket.TextMessage {
			s.input(t, string(data))
		}
	}
	s.closeTunnel(t) // the client left, unless the tunnel closed first
	<-written
}

// writeWebSocket sends the tunnel's output as text messages, keeps an idle
// tunnel alive with sync instructions, and once the tunnel closes sends
// what is left and the close frame.
func (s *Server) writeWebSocket(conn *websocket.Conn, t *tunnel) {
	keepAlive := time.NewTicker(tunnelKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-t.wake:
		case <-keepAlive.C:
			t.send(s.syncInstruction(s.opts.Clock()))
			continue
		case <-t.done:
			if out := t.take(); out != "" {
				_ = conn.SetWriteDeadline(time.Now().Add(wsWriteWait))
				_ = conn.WriteMessage(websocket.TextMessage, []byte(out))
			}
			code, reason, hard := t.closeFrame()
			msg := websocket.FormatCloseMessage(code, reason)
			_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wsWriteWait))
			if hard {
				_ = conn.Close()
			} else {
				// The reader returns once the client answers the close.
				_ = conn.SetReadDeadline(time.Now().Add(wsCloseGrace))
			}
			return
		}

		out := t.take()
		if out == "" {
			continue
		}
		_ = conn.SetWriteDeadline(time.Now().Add(wsWriteWait))
		if err := conn.WriteMessage(websocket.TextMessage, []byte(out)); err != nil {
			_ = conn.Close() // ends the reader too
			return
		}
		keepAlive.Reset(tunnelKeepAlive)
	}
}

// awaitClose reads until the client answers a close frame the server has
// sent, or wsCloseGrace passes.
func awaitClose(conn *websocket.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(wsCloseGrace))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			return
		}
	}
}
