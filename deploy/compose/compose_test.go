// Package compose holds a Docker Compose file for trying guacproxy in front
// of a real Guacamole. Its tests check that the file and guacproxy's
// configuration agree.
package compose

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/guacproxy/guacproxy/config"
)

// configPath is where the image looks for guacproxy's configuration.
const configPath = "/etc/guacproxy/config.yaml"

// composeFile is the part of compose.yaml these tests look at. Compose
// accepts several spellings for most fields, so those are left untyped and
// read by the helpers below.
type composeFile struct {
	Services map[string]service `json:"services"`
}

type service struct {
	Image           string `json:"image"`
	Build           any    `json:"build"`       // context string, or {context, dockerfile}
	Environment     any    `json:"environment"` // map, or list of KEY=VALUE
	Ports           []any  `json:"ports"`       // "[ip:]host:container", or {target, published, host_ip}
	Volumes         []any  `json:"volumes"`     // "source:target[:mode]", or {source, target}
	DependsOn       any    `json:"depends_on"`  // list, or map of name to condition
	StopGracePeriod string `json:"stop_grace_period"`
}

func load(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return f
}

func (f composeFile) service(t *testing.T, name string) service {
	t.Helper()
	s, ok := f.Services[name]
	if !ok {
		t.Fatalf("compose.yaml has no %s service", name)
	}
	return s
}

// env returns the service's environment as a map.
func (s service) env() map[string]string {
	out := make(map[string]string)
	switch e := s.Environment.(type) {
	case map[string]any:
		for k, v := range e {
			out[k] = fmt.Sprint(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
			out[k] = v
		}
	}
	return out
}

func (s service) dependsOn() []string {
	switch d := s.DependsOn.(type) {
	case map[string]any:
		var out []string
		for k := range d {
			out = append(out, k)
		}
		return out
	case []any:
		var out []string
		for _, v := range d {
			out = append(out, fmt.Sprint(v))
		}
		return out
	}
	return nil
}

// mountSource returns the host path mounted at target, as written.
func (s service) mountSource(target string) (string, bool) {
	for _, v := range s.Volumes {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == target {
				return parts[0], true
			}
		case map[string]any:
			if v["target"] == target {
				src, ok := v["source"].(string)
				return src, ok
			}
		}
	}
	return "", false
}

// published is a published port: the host IP it is bound to (empty for
// every interface of the host) and the container port behind it.
type published struct {
	hostIP    string
	container string
}

// published returns the ports the service publishes on the host.
func (s service) published() []published {
	var out []published
	for _, p := range s.Ports {
		switch p := p.(type) {
		case string:
			parts := strings.Split(p, ":")
			pub := published{container: parts[len(parts)-1]}
			if len(parts) == 3 {
				pub.hostIP = parts[0]
			}
			out = append(out, pub)
		case map[string]any:
			ip, _ := p["host_ip"].(string)
			out = append(out, published{hostIP: ip, container: fmt.Sprint(p["target"])})
		default:
			out = append(out, published{container: fmt.Sprint(p)})
		}
	}
	return out
}

// guacproxyConfig parses the configuration file mounted into the guacproxy
// service, with a stand-in for each variable of its environment, so that a
// password_env the service does not set fails the parse.
func guacproxyConfig(t *testing.T, f composeFile) *config.Config {
	t.Helper()
	proxy := f.service(t, "guacproxy")
	src, ok := proxy.mountSource(configPath)
	if !ok {
		t.Fatalf("guacproxy service mounts nothing at %s", configPath)
	}
	data, err := os.ReadFile(filepath.FromSlash(src))
	if err != nil {
		t.Fatalf("guacproxy's configuration: %v", err)
	}
	for k := range proxy.env() {
		t.Setenv(k, "stand-in")
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	return cfg
}

func TestServices(t *testing.T) {
	f := load(t)
	for _, name := range []string{"guacd", "initdb", "postgres", "guacamole", "guacproxy"} {
		s := f.service(t, name)
		if name == "guacproxy" {
			continue // built from the repository
		}
		if _, tag, _ := strings.Cut(s.Image, ":"); tag == "" || tag == "latest" {
			t.Errorf("%s image = %q; want a pinned version", name, s.Image)
		}
	}
	if deps := f.service(t, "guacproxy").dependsOn(); !slices.Contains(deps, "guacamole") {
		t.Errorf("guacproxy depends on %q; want guacamole among them", deps)
	}
}

func TestGuacproxyIsBuiltFromTheRepository(t *testing.T) {
	f := load(t)
	var context, dockerfile string
	switch b := f.service(t, "guacproxy").Build.(type) {
	case string:
		context = b
	case map[string]any:
		context, _ = b["context"].(string)
		dockerfile, _ = b["dockerfile"].(string)
	default:
		t.Fatalf("guacproxy build = %v; want the repository's Dockerfile", b)
	}
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	root := filepath.FromSlash(context)
	for _, want := range []string{dockerfile, "go.mod"} {
		if _, err := os.Stat(filepath.Join(root, want)); err != nil {
			t.Errorf("build context %q: %v; want the repository root", context, err)
		}
	}
}

func TestGuacproxyReachesGuacamole(t *testing.T) {
	f := load(t)
	cfg := guacproxyConfig(t, f)
	u, err := url.Parse(cfg.Guacamole.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Services[u.Hostname()]; !ok || u.Hostname() != "guacamole" {
		t.Errorf("guacamole.url host = %q; want the guacamole service", u.Hostname())
	}
	if u.Port() != "8080" {
		t.Errorf("guacamole.url port = %q; want 8080, Tomcat's", u.Port())
	}
}

func TestSessionTimeoutsAgree(t *testing.T) {
	f := load(t)
	cfg := guacproxyConfig(t, f)
	raw, ok := f.service(t, "guacamole").env()["API_SESSION_TIMEOUT"]
	if !ok {
		t.Fatal("guacamole service does not set API_SESSION_TIMEOUT")
	}
	minutes, err := strconv.Atoi(raw)
	if err != nil {
		t.Fatalf("API_SESSION_TIMEOUT = %q; want whole minutes", raw)
	}
	if got, want := time.Duration(minutes)*time.Minute, cfg.Guacamole.SessionTimeout; got != want {
		t.Errorf("API_SESSION_TIMEOUT = %s; want guacproxy's session_timeout, %s", got, want)
	}
}

func TestOnlyGuacproxyIsPublished(t *testing.T) {
	f := load(t)
	for name, s := range f.Services {
		if name != "guacproxy" && len(s.Ports) > 0 {
			t.Errorf("%s publishes ports %v; want only guacproxy's published", name, s.Ports)
		}
	}

	cfg := guacproxyConfig(t, f)
	_, listen, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range f.service(t, "guacproxy").published() {
		if ip := net.ParseIP(p.hostIP); ip == nil || !ip.IsLoopback() {
			t.Errorf("guacproxy port %s is published on %q; want the host's loopback only",
				p.container, p.hostIP)
		}
		found = found || p.container == listen
	}
	if !found {
		t.Errorf("guacproxy's listen port %s is not published", listen)
	}
}

func TestStopGracePeriodCoversShutdown(t *testing.T) {
	f := load(t)
	cfg := guacproxyConfig(t, f)
	raw := f.service(t, "guacproxy").StopGracePeriod
	got, err := time.ParseDuration(raw)
	if err != nil {
		t.Fatalf("guacproxy stop_grace_period = %q: %v", raw, err)
	}
	if want := cfg.ShutdownGrace + 2*cfg.Guacamole.Timeout; got < want {
		t.Errorf("guacproxy stop_grace_period = %s; want at least %s "+
			"(shutdown_grace %s + 2 x guacamole.timeout %s)",
			got, want, cfg.ShutdownGrace, cfg.Guacamole.Timeout)
	}
}
