package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a process the bench started and must stop.
type child struct {
	name  string
	cmd   *exec.Cmd
	done  chan struct{}
	watch *lineWatcher
	log   *os.File
}

// startChild runs path with args, its output going to name.log in dir. If
// watch is given, stderr lines are also searched for those strings.
func startChild(dir, name string, env []string, watch []string, path string,
	args ...string) (*child, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	// The operator names the binaries; stop ends them with SIGTERM, not a context.
	cmd := exec.Command(path, args...) //nolint:gosec,noctx // see above
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logf
	c := &child{name: name, cmd: cmd, done: make(chan struct{}), log: logf}
	if len(watch) > 0 {
		pr, pw := io.Pipe()
		cmd.Stderr = pw
		c.watch = watchLines(pr, logf, watch...)
		defer func() {
			go func() { <-c.done; _ = pw.Close() }()
		}()
	} else {
		cmd.Stderr = logf
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

// stop asks the child to end with SIGTERM and kills it if it has not ended
// after grace. It returns how long the child took to exit.
func (c *child) stop(grace time.Duration) time.Duration {
	start := time.Now()
	select {
	case <-c.done:
		return 0
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	took := time.Since(start)
	_ = c.log.Close()
	return took
}

// cpuTime returns the user and system CPU time used so far by pid and its
// direct children (nginx's workers), from /proc.
func cpuTime(pid int) (time.Duration, error) {
	const ticks = 100 // USER_HZ on Linux
	total, err := procTicks(pid)
	if err != nil {
		return 0, err
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		if ppid, err := procField(p, 4); err == nil && ppid == int64(pid) {
			if t, err := procTicks(p); err == nil {
				total += t
			}
		}
	}
	return time.Duration(total) * time.Second / ticks, nil
}

func procTicks(pid int) (int64, error) {
	u, err := procField(pid, 14)
	if err != nil {
		return 0, err
	}
	s, err := procField(pid, 15)
	return u + s, err
}

// procField returns field n (1-based, as in proc(5)) of /proc/pid/stat.
func procField(pid, n int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields resume after ')'.
	s := string(data)
	rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if n < 3 || n-3 >= len(rest) {
		return 0, fmt.Errorf("no field %d in /proc/%d/stat", n, pid)
	}
	return strconv.ParseInt(rest[n-3], 10, 64)
}

// freeAddrs returns n distinct loopback addresses with ports that were free
// just now. The ports are held until all are chosen, since the kernel may
// hand out a port again as soon as it is released.
func freeAddrs(n int) ([]string, error) {
	var lc net.ListenConfig
	addrs := make([]string, 0, n)
	for range n {
		ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// waitStatus polls url until it answers want, for at most d.
func waitStatus(ctx context.Context, url string, hdr map[string]string, want int,
	d time.Duration) error {
	deadline := time.Now().Add(d)
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %d within %s (last: %s)", url, want, d, last)
}

// login gets a token for benchUser straight from the stand-in.
func login(ctx context.Context, baseURL, password string) (string, error) {
	form := url.Values{"username": {benchUser}, "password": {password}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/api/tokens",
		strings.NewReader(form))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var s struct {
		AuthToken string `json:"authToken"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || s.AuthToken == "" {
		return "", fmt.Errorf("login answered %s", resp.Status)
	}
	return s.AuthToken, nil
}

// fetchStats reads the stand-in's counters.
func fetchStats(ctx context.Context, upAddr string) (upstreamStats, error) {
	var st upstreamStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+upAddr+statsPath, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// identityKey is the API key of the i-th identity of a generated config.
func identityKey(seed string, i int) string { return fmt.Sprintf("%s-%05d", seed, i) }

// writeGuacproxyConfig writes a guacproxy configuration with n identities,
// all logging in as benchUser with the password from passwordEnv, the i-th
// selected by identityKey(seed, i).
func writeGuacproxyConfig(path, listen, admin, guacURL, seed string, n int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nadmin_listen: %s\n", listen, admin)
	fmt.Fprintf(&b, "guacamole:\n  url: %s\n", guacURL)
	b.WriteString("shutdown_grace: 5s\nlog:\n  level: info\n  format: json\nidentities:\n")
	for i := range n {
		sum := sha256.Sum256([]byte(identityKey(seed, i)))
		fmt.Fprintf(&b, "  - name: id-%05d\n    username: %s\n    password_env: %s\n"+
			"    api_keys_sha256: [%s]\n", i, benchUser, passwordEnv, hex.EncodeToString(sum[:]))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// writeNginxConfig writes an nginx configuration that proxies listen to the
// stand-in with a static Guacamole-Token header and keep-alive connections
// upstream, and keeps every file it writes under dir.
func writeNginxConfig(dir, listen, upAddr, token string) (string, error) {
	conf := fmt.Sprintf(`daemon off;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream guacamole {
        server %[2]s;
        keepalive 64;
    }
    server {
        listen %[3]s;
        location / {
            proxy_pass http://guacamole%[4]s/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Guacamole-Token "%[5]s";
        }
    }
}
`, dir, upAddr, listen, basePath, token)
	path := filepath.Join(dir, "nginx.conf")
	return path, os.WriteFile(path, []byte(conf), 0o600)
}
