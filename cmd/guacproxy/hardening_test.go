package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

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
	cfg := &config.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		Guacamole:   config.Guacamole{URL: emu.URL},
		Identities:  []config.Identity{{Name: "tool", Username: "svc-tool", Password: "hardening-pw", Default: true}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := newServer(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(srv)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
	return srv
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
