package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/config"
	"github.com/guacproxy/guacproxy/proxy"
	"github.com/guacproxy/guacproxy/proxy/metrics"
	"github.com/guacproxy/guacproxy/tokencache"
)

// Server timeouts. Tunnels stream for hours, so there is no overall read or
// write timeout; slow or idle clients are bounded by these instead.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10

	// tunnelSweepInterval is how often HTTP tunnels that stopped reading
	// are looked for.
	tunnelSweepInterval = 15 * time.Second
)

// server is one running guacproxy: the proxy and admin listeners and the
// token cache behind them.
type server struct {
	cfg     *config.Config
	log     *zap.Logger
	cache   *tokencache.Cache
	handler *proxy.Proxy
	metrics *metrics.Metrics
	ready   proxy.Readiness
	proxy   *http.Server
	admin   *http.Server
	pln     net.Listener
	aln     net.Listener
	closed  chan struct{}

	// configPath, if set, is the file reloads read; reloads are requested
	// on reloads, by SIGHUP and the file watch.
	configPath string
	reloads    chan struct{}
	watcher    *fsnotify.Watcher
}

// newServer wires guacproxy from cfg and opens its listeners. audit, if not
// nil, receives the audit log.
func newServer(cfg *config.Config, logger, audit *zap.Logger) (*server, error) {
	upstream, err := url.Parse(cfg.Guacamole.URL)
	if err != nil {
		return nil, fmt.Errorf("guacamole.url: %w", err)
	}
	transport := newTransport(cfg.Guacamole)
	var cache *tokencache.Cache
	m := metrics.New(func() float64 { return float64(cache.Stats().Live) })
	cache = tokencache.New(tokencache.Options{
		Client:         tokencache.NewClient(cfg.Guacamole.URL, &http.Client{Transport: transport}),
		SessionTimeout: cfg.Guacamole.SessionTimeout,
		MaxLifetime:    cfg.Tokens.MaxLifetime,
		CallTimeout:    cfg.Guacamole.Timeout,
		BanMaxFailures: cfg.Guacamole.Ban.MaxFailures,
		BanWindow:      cfg.Guacamole.Ban.Window,
		Logger:         logger,
		Observer:       m,
	})

	ids, names := proxyIdentities(cfg)
	cache.SetIdentities(cacheIdentities(ids))
	p, err := proxy.New(proxy.Options{
		Upstream:       upstream,
		Transport:      transport,
		Tokens:         cache,
		Identities:     ids,
		TrustedProxies: cfg.TrustedProxyNets,
		PhantomIdle:    tokencache.IdleLimit(cfg.Guacamole.SessionTimeout),
		Logger:         logger,
		AuditLogger:    audit,
		Metrics:        m,
	})
	if err != nil {
		_, _ = cache.Close(context.Background())
		return nil, err
	}
	m.Init(names)

	s := &server{cfg: cfg, log: logger.Named("server"), cache: cache, handler: p, metrics: m,
		closed: make(chan struct{}), reloads: make(chan struct{}, 1)}
	s.proxy = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log),
	}
	s.admin = &http.Server{
		Handler:           proxy.AdminHandler(&s.ready, m.Handler()),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log),
	}

	var lc net.ListenConfig
	if s.pln, err = lc.Listen(context.Background(), "tcp", cfg.Listen); err != nil {
		_, _ = cache.Close(context.Background())
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.TLS.Enabled() {
		s.pln = tls.NewListener(s.pln, inboundTLS(cfg.TLS))
	}
	if s.aln, err = lc.Listen(context.Background(), "tcp", cfg.AdminListen); err != nil {
		_ = s.pln.Close()
		_, _ = cache.Close(context.Background())
		return nil, fmt.Errorf("admin_listen: %w", err)
	}
	return s, nil
}

// newTransport returns the connection pool to Guacamole, shared by the proxy
// and the token cache. Environment proxy settings are ignored: guacproxy
// sits next to Guacamole.
func newTransport(g config.Guacamole) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: g.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: g.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   g.Timeout,
		ResponseHeaderTimeout: g.RequestTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// proxyIdentities translates the configured identities for the proxy, and
// lists their names.
func proxyIdentities(cfg *config.Config) ([]proxy.Identity, []string) {
	ids := make([]proxy.Identity, len(cfg.Identities))
	names := make([]string, len(cfg.Identities))
	for i, id := range cfg.Identities {
		names[i] = id.Name
		ids[i] = proxy.Identity{
			Identity:     tokencache.Identity{Name: id.Name, Username: id.Username, Password: id.Password},
			APIKeyHashes: id.APIKeyHashes,
			Default:      id.Default,
			ClientCert: proxy.CertMatch{URIs: id.ClientCert.URIs, DNSNames: id.ClientCert.DNSNames,
				CommonNames: id.ClientCert.CommonNames},
			Header:     proxy.HeaderMatch(id.Header),
			SourceNets: id.SourceNets,
		}
		for _, r := range id.Allow {
			ids[i].Allow = append(ids[i].Allow, proxy.Rule(r))
		}
	}
	return ids, names
}

// cacheIdentities returns the accounts of ids, for the token cache.
func cacheIdentities(ids []proxy.Identity) []tokencache.Identity {
	out := make([]tokencache.Identity, len(ids))
	for i, id := range ids {
		out[i] = id.Identity
	}
	return out
}

// inboundTLS is the TLS configuration of the proxy listener. Client
// certificates are verified when presented, so that callers recognised
// another way need none.
func inboundTLS(t config.TLS) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{*t.Certificate}, MinVersion: tls.VersionTLS12}
	if t.ClientCAs != nil {
		c.ClientCAs = t.ClientCAs
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

// proxyAddr is the address the proxy listens on.
func (s *server) proxyAddr() string { return s.pln.Addr().String() }

// adminAddr is the address the admin endpoints listen on.
func (s *server) adminAddr() string { return s.aln.Addr().String() }

// run serves until ctx ends, then shuts down in order: not ready, drain
// in-flight requests for up to shutdown_grace, revoke every token, stop the
// admin listener.
func (s *server) run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- serveOn(s.proxy, s.pln) }()
	go func() { errc <- serveOn(s.admin, s.aln) }()
	s.ready.Set(true)
	s.log.Info("serving", zap.String("listen", s.proxyAddr()),
		zap.String("admin_listen", s.adminAddr()),
		zap.String("guacamole", s.cfg.Guacamole.URL),
		zap.Int("identities", len(s.cfg.Identities)))

	if s.configPath != "" {
		watchCtx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		if err := s.watchConfig(watchCtx); err != nil {
			s.log.Warn("configuration changes will need SIGHUP", zap.Error(err))
		}
	}

	var runErr error
	sweep := time.NewTicker(tunnelSweepInterval)
	defer sweep.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			s.log.Info("shutting down", zap.Duration("grace", s.cfg.ShutdownGrace),
				zap.Any("open_tunnels", s.handler.OpenTunnels()))
			break wait
		case runErr = <-errc:
			s.log.Error("listener failed", zap.Error(runErr))
			break wait
		case <-sweep.C:
			s.handler.Sweep()
		case <-s.reloads:
			if s.configPath != "" {
				s.reload()
			}
		}
	}
	s.ready.Set(false)

	// A fresh context: the one that ended is what asked us to stop. Open
	// tunnels share the grace period with requests; Shutdown does not wait
	// for WebSocket tunnels, so they are waited for, then closed.
	drainCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	if err := s.proxy.Shutdown(drainCtx); err != nil {
		s.log.Warn("requests still running after the grace period", zap.Error(err))
		_ = s.proxy.Close()
	}
	if err := s.handler.WaitTunnels(drainCtx); err != nil {
		s.log.Warn("closing tunnels still open after the grace period",
			zap.Any("open_tunnels", s.handler.OpenTunnels()))
	}
	s.handler.CloseTunnels()
	cancel()

	revokeCtx, cancel := context.WithTimeout(context.Background(), s.revokeBound())
	st, err := s.cache.Close(revokeCtx)
	cancel()
	fields := []zap.Field{zap.Int64("revoked", st.Revoked),
		zap.Int64("already_gone", st.AlreadyGone), zap.Int64("failed", st.RevokeErrors),
		zap.Int("not_revoked", st.Live)}
	if err != nil {
		s.log.Error("tokens left unrevoked", append(fields, zap.Error(err))...)
		runErr = errors.Join(runErr, err)
	} else {
		s.log.Info("tokens revoked", fields...)
	}

	adminCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = s.admin.Shutdown(adminCtx)
	cancel()
	close(s.closed)
	return runErr
}

// revokeBound is how long shutdown may spend revoking tokens: each call is
// bounded by guacamole.timeout, and they run concurrently.
func (s *server) revokeBound() time.Duration {
	return 2 * s.cfg.Guacamole.Timeout
}

func serveOn(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
