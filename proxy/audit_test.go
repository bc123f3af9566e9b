package proxy

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/guacproxy/guacproxy/proxy/metrics"
)

func TestAuditLogRecord(t *testing.T) {
	var audit syncBuffer
	e := newEnv(t, envOptions{audit: zap.New(zapcore.NewCore(
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&audit), zapcore.InfoLevel))})

	tests := []struct {
		name     string
		path     string
		hdr      http.Header
		wantID   string // empty: a generated one
		wantCode int
		wantWho  string
	}{
		{"client request id kept", "/api/session/data/default/self?token=CLIENTSECRET&x=1",
			http.Header{"X-Request-Id": {"req-42"}}, "req-42", 200, "tool"},
		{"request id generated", "/api/session/data/default/connections", nil, "", 200, "tool"},
		{"bad request id replaced", "/api/session/data/default/self",
			http.Header{"X-Request-Id": {"has space"}}, "", 200, "tool"},
		{"unknown key falls to the default", "/api/session/data/default/self",
			http.Header{"Authorization": {"Bearer nope"}}, "", 200, "tool"},
		{"refused revocation", "/api/tokens/ABCDEF0123", nil, "", 404, "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := strings.Count(audit.String(), "\n")
			method := http.MethodGet
			if strings.HasPrefix(tt.path, "/api/tokens/") {
				method = http.MethodDelete
			}
			resp, _ := e.do(t, method, tt.path, tt.hdr, nil)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status = %d; want %d", resp.StatusCode, tt.wantCode)
			}
			lines := strings.Split(strings.TrimSpace(audit.String()), "\n")
			if len(lines) != before+1 {
				t.Fatalf("audit lines = %d; want one more than %d", len(lines), before)
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rec); err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get("X-Request-Id")
			if id == "" || rec["request_id"] != id || (tt.wantID != "" && id != tt.wantID) {
				t.Errorf("request id: response %q, audit %v; want %q", id, rec["request_id"], tt.wantID)
			}
			if tt.wantCode == 200 && e.seen.last(t).Header.Get("X-Request-Id") != id {
				t.Errorf("Guacamole got request id %q; want %q", e.seen.last(t).Header.Get("X-Request-Id"), id)
			}
			path, _, _ := strings.Cut(tt.path, "?")
			if strings.HasPrefix(path, "/api/tokens/") {
				path = "/api/tokens/REDACTED"
			}
			want := map[string]any{"msg": "request", "identity": tt.wantWho, "method": method,
				"path": path, "status": float64(tt.wantCode)}
			for k, v := range want {
				if rec[k] != v {
					t.Errorf("audit %s = %v; want %v", k, rec[k], v)
				}
			}
			for _, k := range []string{"ts", "duration", "bytes", "remote_addr"} {
				if _, ok := rec[k]; !ok {
					t.Errorf("audit record lacks %s: %v", k, rec)
				}
			}
			if tt.wantWho == "tool" && rec["username"] != tool.Username {
				t.Errorf("audit username = %v; want %s", rec["username"], tool.Username)
			}
		})
	}
	for _, bad := range []string{"CLIENTSECRET", "ABCDEF0123", "token=", "x=1"} {
		if strings.Contains(audit.String(), bad) {
			t.Errorf("the audit log contains %q", bad)
		}
	}
}

func TestMetricsFollowRequests(t *testing.T) {
	var live float64
	m := metrics.New(func() float64 { return live })
	e := newEnv(t, envOptions{metrics: m})
	for range 3 {
		e.do(t, http.MethodGet, "/api/session/data/default/self", nil, nil)
	}
	e.do(t, http.MethodGet, "/api/session/data/default/users", nil, nil)
	e.do(t, http.MethodGet, "/api/session/data/default/self", bearerHeader("unknown-key-but-default"), nil)

	got := scrape(t, m)
	for _, want := range []string{
		`guacproxy_requests_total{code="200",identity="tool"} 4`,
		`guacproxy_requests_total{code="403",identity="tool"} 1`,
		`guacproxy_logins_total{identity="tool",result="ok"} 1`,
		`guacproxy_cache_lookups_total{result="hit"} 4`,
		`guacproxy_cache_lookups_total{result="miss"} 1`,
		`guacproxy_request_duration_seconds_count{identity="tool"} 5`,
		`guacproxy_upstream_duration_seconds_count 5`,
		`guacproxy_tokens_live 0`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	checkNoSecret(t, nil, []byte(got))
}
