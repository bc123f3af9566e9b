package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/proxy"
	"github.com/guacproxy/guacproxy/tokencache"
)

// Environment variables that carry secrets to child processes.
const (
	passwordEnv = "GUACBENCH_PASSWORD" //nolint:gosec // a variable's name, not a password
	tokenEnv    = "GUACBENCH_TOKEN"    //nolint:gosec // a variable's name, not a token
	keyEnv      = "GUACBENCH_KEY"      // the API key of the in-process guacproxy
)

// newBareProxy returns the baseline reverse proxy: the same forwarding as
// guacproxy (target URL, X-Forwarded-* headers) plus a static
// Guacamole-Token header, and nothing else. Untuned, it uses
// httputil.ReverseProxy's defaults: http.DefaultTransport, which keeps two
// idle connections per host, and a fresh 32 KiB copy buffer per request.
// Tuned, it pools its copy buffers and keeps enough idle connections for
// the load.
func newBareProxy(target *url.URL, token string, tuned bool) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Header.Set("Guacamole-Token", token)
		},
	}
	if tuned {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = 1024
		tr.MaxIdleConnsPerHost = 256
		tr.DisableCompression = true
		rp.Transport = tr
		rp.BufferPool = newBufferPool(32 << 10)
	}
	return rp
}

// bufferPool is an httputil.BufferPool backed by a sync.Pool.
type bufferPool struct{ p sync.Pool }

func newBufferPool(size int) *bufferPool {
	bp := &bufferPool{}
	bp.p.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return bp
}

func (bp *bufferPool) Get() []byte { return *bp.p.Get().(*[]byte) }

func (bp *bufferPool) Put(b []byte) { bp.p.Put(&b) }

// cmdProxy serves a bare reverse proxy until SIGINT or SIGTERM.
func cmdProxy(args []string) int {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8082", "address to serve on")
	target := fs.String("upstream", "", "Guacamole's base URL, with the context path")
	tuned := fs.Bool("tuned", false, "pool buffers and idle connections")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		fmt.Fprintf(os.Stderr, "guacbench proxy: bad -upstream %q\n", *target)
		return 2
	}
	token := os.Getenv(tokenEnv)
	if token == "" {
		fmt.Fprintf(os.Stderr, "guacbench proxy: %s is not set\n", tokenEnv)
		return 2
	}
	return serveUntilSignal("proxy", *listen, newBareProxy(u, token, *tuned))
}

// cmdInproc serves guacproxy's handler and token cache, wired as
// cmd/guacproxy wires them, with net/http/pprof on a second address, so that
// guacproxy can be profiled under load. It has one identity, benchUser,
// selected by the API key in GUACBENCH_KEY.
func cmdInproc(args []string) int {
	fs := flag.NewFlagSet("inproc", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8083", "address to serve on")
	pprofAddr := fs.String("pprof", "127.0.0.1:6060", "address of /debug/pprof/")
	target := fs.String("upstream", "", "Guacamole's base URL, with the context path")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		fmt.Fprintf(os.Stderr, "guacbench inproc: bad -upstream %q\n", *target)
		return 2
	}
	password, key := os.Getenv(passwordEnv), os.Getenv(keyEnv)
	if password == "" || key == "" {
		fmt.Fprintf(os.Stderr, "guacbench inproc: %s and %s must be set\n", passwordEnv, keyEnv)
		return 2
	}

	logger, err := zap.NewProduction()
	if err != nil {
		fmt.Fprintf(os.Stderr, "guacbench inproc: %v\n", err)
		return 1
	}
	transport := guacproxyTransport()
	cache := tokencache.New(tokencache.Options{
		Client: tokencache.NewClient(*target, &http.Client{Transport: transport}),
		Logger: logger,
	})
	defer func() { _, _ = cache.Close(context.Background()) }()
	p, err := proxy.New(proxy.Options{
		Upstream:  u,
		Transport: transport,
		Tokens:    cache,
		Identities: []proxy.Identity{{
			Identity:     tokencache.Identity{Name: "bench", Username: benchUser, Password: password},
			APIKeyHashes: [][32]byte{sha256.Sum256([]byte(key))},
		}},
		Logger: logger,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "guacbench inproc: %v\n", err)
		return 1
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go func() { _ = serveUntilSignal("pprof", *pprofAddr, mux) }()
	return serveUntilSignal("inproc", *listen, p)
}

// guacproxyTransport has the settings of cmd/guacproxy's connection pool to
// Guacamole (plain HTTP, default timeouts).
func guacproxyTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// serveUntilSignal serves h on addr until SIGINT or SIGTERM, then shuts
// down gracefully. It returns an exit code.
func serveUntilSignal(name, addr string, h http.Handler) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "guacbench %s: %v\n", name, err)
		return 1
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		fmt.Fprintf(os.Stderr, "guacbench %s: %v\n", name, err)
		return 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return 1
	}
	return 0
}
