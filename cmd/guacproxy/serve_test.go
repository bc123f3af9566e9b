package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/config"
)

// stopBound keeps a broken shutdown from hanging a test; it is no timing
// assertion.
const stopBound = 30 * time.Second

// running is a guacproxy serving in the background until the test stops it
// or ends.
type running struct {
	srv     *server
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// newTestServer is newServer for a test: it fails the test on an error.
func newTestServer(t *testing.T, cfg *config.Config, logger *zap.Logger) *server {
	t.Helper()
	srv, err := newServer(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// serve runs srv until stop is called or the test ends, and returns once it
// is ready. A run that ends with an error fails the test.
func serve(t *testing.T, srv *server) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.run(ctx) }()
	t.Cleanup(func() {
		if !r.stopped {
			if err := r.stop(t); err != nil {
				t.Errorf("run: %v", err)
			}
		}
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
	waitFor(t, func() bool { return status(t, "http://"+srv.adminAddr()+"/readyz") == http.StatusOK })
	return r
}

// stop plays a SIGTERM and returns what run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.stopped = true
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(stopBound + r.srv.cfg.ShutdownGrace + r.srv.revokeBound()):
		t.Fatal("run did not return after its context ended")
		return nil
	}
}

// base is the URL tools use to reach the proxy.
func (r *running) base() string { return "http://" + r.srv.proxyAddr() }

// toolConfig is a valid configuration, with defaults, for guacproxy in
// front of the Guacamole at url with one default identity "tool" logging in
// as svc-tool with password. adjust, if not nil, changes it before it is
// validated.
func toolConfig(t *testing.T, url, password string, adjust func(*config.Config)) *config.Config {
	t.Helper()
	cfg := &config.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		Guacamole:   config.Guacamole{URL: url},
		Identities:  []config.Identity{{Name: "tool", Username: "svc-tool", Password: password, Default: true}},
	}
	cfg.ApplyDefaults()
	if adjust != nil {
		adjust(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}
