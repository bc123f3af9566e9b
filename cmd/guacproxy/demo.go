package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/guacproxy/guacproxy/config"
	"github.com/guacproxy/guacproxy/tokencache"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// The demo's Guacamole account. Its password is random per run.
const demoUsername = "svc-demo"

// cmdDemo runs guacproxy in front of the built-in Guacamole emulator, so a
// newcomer sees logins, token injection, caching and revocation without a
// Guacamole of their own.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address for tools to connect to")
	adminListen := fs.String("admin-listen", "127.0.0.1:9091", "address of /healthz and /readyz")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}

	out := zapcore.Lock(zapcore.AddSync(stderr))
	logger, err := newLoggerTo(config.Log{Level: "info", Format: "console"}, out)
	if err != nil {
		fmt.Fprintf(stderr, "guacproxy demo: %v\n", err)
		return exitRuntime
	}
	defer func() { _ = logger.Sync() }()

	cfg, emu := demoSetup(*listen, *adminListen, logger)
	defer emu.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	audit, stopAudit := newAuditLogger("console", out)
	defer stopAudit()
	srv, err := newServer(cfg, logger, audit)
	if err != nil {
		logger.Error("cannot start", zap.Error(err))
		return exitUsage
	}
	printDemoHelp(stdout, srv.proxyAddr(), srv.adminAddr())
	if err := srv.run(ctx); err != nil {
		logger.Error("stopped with an error", zap.Error(err))
		return exitRuntime
	}
	st := emu.Stats()
	logger.Info("emulator at exit", zap.Int("logins", st.Logins),
		zap.Int("revocations", st.Revocations), zap.Int("live_sessions", st.LiveSessions))
	return exitOK
}

// demoSetup starts the emulator and builds a configuration for it with one
// default identity.
func demoSetup(listen, adminListen string, logger *zap.Logger) (*config.Config, *guacamoletest.Server) {
	password := rand.Text()
	emuLog := logger.Named("guacamole-emulator")
	emu := guacamoletest.NewServer(guacamoletest.Options{
		Users: map[string]guacamoletest.User{demoUsername: {Password: password}},
		Observe: func(r *http.Request) {
			path, token := r.URL.Path, r.Header.Get("Guacamole-Token")
			if token == "" {
				token = r.URL.Query().Get("token")
			}
			// A revocation carries the token in its path.
			if i := strings.Index(path, "/api/tokens/"); i >= 0 {
				token = path[i+len("/api/tokens/"):]
				path = path[:i] + "/api/tokens/…"
			}
			fields := []zap.Field{zap.String("method", r.Method), zap.String("path", path)}
			if token != "" {
				fields = append(fields, zap.String("token_fp", tokencache.Fingerprint(token)))
			}
			emuLog.Info("guacamole received", fields...)
		},
	})

	cfg := &config.Config{
		Listen:      listen,
		AdminListen: adminListen,
		Guacamole:   config.Guacamole{URL: emu.URL},
		Identities: []config.Identity{{
			Name:     "demo",
			Username: demoUsername,
			Password: password,
			Default:  true,
		}},
	}
	cfg.ApplyDefaults()
	cfg.ShutdownGrace = 5 * time.Second
	if err := cfg.Validate(); err != nil {
		// The demo's own configuration is fixed; failing here is a bug.
		panic(fmt.Sprintf("demo configuration: %v", err))
	}
	return cfg, emu
}

func printDemoHelp(w io.Writer, addr, adminAddr string) {
	fmt.Fprintf(w, `
guacproxy demo: a Guacamole emulator is running, with guacproxy in front of it
on http://%[1]s. The identity "demo" is the default, so no API key is needed.
Try, in another terminal:

  # guacproxy logs in once and injects the token; the tool never sees it
  curl -s http://%[1]s/api/session/data/default/connections

  # a token sent by the tool is stripped and replaced; the cached one is reused
  curl -s 'http://%[1]s/api/session/data/default/self?token=made-up' -H 'Guacamole-Token: made-up'

  # readiness, as a load balancer would ask
  curl -s http://%[2]s/readyz

Press Ctrl-C to stop: guacproxy drains requests and revokes its token.

`, addr, adminAddr)
}
