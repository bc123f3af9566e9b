package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/guacproxy/guacproxy/config"
)

// defaultProbeTimeout bounds a health check when --timeout is not given.
const defaultProbeTimeout = 2 * time.Second

// cmdHealthcheck asks a running guacproxy whether it is ready, for container
// health checks in images that have no shell or curl. It exits 0 when
// /readyz answers 200 and 1 otherwise, never 2: Docker reserves that code in
// a HEALTHCHECK. It prints a single line either way.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "", "readiness URL to probe (default: /readyz on the "+
		"admin_listen of $GUACPROXY_CONFIG, else on "+config.DefaultAdminListen+")")
	timeout := fs.Duration("timeout", defaultProbeTimeout, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return exitRuntime
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "guacproxy healthcheck: unexpected arguments %q\n", fs.Args())
		return exitRuntime
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "guacproxy healthcheck: --timeout must be greater than zero")
		return exitRuntime
	}

	u := *target
	if u == "" {
		u = readyzURL(os.Getenv("GUACPROXY_CONFIG"))
	}
	if err := probeReady(u, *timeout); err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return exitRuntime
	}
	fmt.Fprintf(stdout, "healthy: %s answered 200\n", u)
	return exitOK
}

// readyzURL returns the /readyz URL of the admin listener named in the
// configuration file at path. If path is empty, or the file cannot be read
// or names no usable address, it returns the URL for DefaultAdminListen.
//
// Only admin_listen is read, and leniently: a health check should not depend
// on the secrets the rest of the file points to, nor fail because of a
// mistake elsewhere in it (serve would have refused to start anyway).
func readyzURL(path string) string {
	addr := config.DefaultAdminListen
	if path != "" {
		if listen, ok := readAdminListen(path); ok {
			addr = listen
		}
	}
	return "http://" + addr + "/readyz"
}

// readAdminListen returns the address to dial to reach the admin_listen of
// the configuration file at path, and whether there is one.
func readAdminListen(path string) (string, bool) {
	data, err := os.ReadFile(path) //nolint:gosec // the operator names the file
	if err != nil {
		return "", false
	}
	var c struct {
		AdminListen string `yaml:"admin_listen"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil || c.AdminListen == "" {
		return "", false
	}
	return dialAddr(c.AdminListen)
}

// dialAddr turns a listen address into one to connect to: a wildcard host
// becomes the loopback address of the same family. Port 0 has no address to
// connect to.
func dialAddr(listen string) (string, bool) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" || port == "0" {
		return "", false
	}
	switch ip := net.ParseIP(host); {
	case host == "", ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port), true
}

// probeReady reports, as an error, why u did not answer 200 within timeout.
// Redirects are not followed and proxy settings from the environment are
// ignored: the admin listener is local and answers directly.
func probeReady(u string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil) //nolint:gosec // the operator names the URL
	if err != nil {
		return err
	}
	client := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req) //nolint:gosec // as above
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s did not answer within %s", u, timeout)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", u, resp.Status)
	}
	return nil
}
