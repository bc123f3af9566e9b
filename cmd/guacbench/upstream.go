package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// basePath is the context path the stand-in serves Guacamole under.
const basePath = "/guacamole"

// benchUser is the Guacamole account every benchmark identity logs in as.
const benchUser = "svc-bench"

// restPath is the REST call every load generator makes, relative to the
// API root guacproxy serves at its own root.
const restPath = "/api/session/data/default/connections"

// statsPath reports what the stand-in has done, for checks between phases.
const statsPath = "/_bench/stats"

// upstream stands in for Guacamole. Logins, revocations and everything off
// the hot path are served by the emulator from tokencache/guacamoletest, so
// guacproxy meets Guacamole's real token behaviour; any GET under
// {base}/api/session/data/ is answered by a fast path that checks the
// Guacamole-Token header against the tokens the emulator issued and sends a
// connection list of about 1 KiB, or Guacamole's 403 for an unknown token.
type upstream struct {
	emu    *guacamoletest.Server
	body   []byte
	live   sync.Map // token -> struct{}: issued by the emulator, not revoked
	served atomic.Int64
	denied atomic.Int64
}

// upstreamStats is the JSON answer at statsPath.
type upstreamStats struct {
	Logins      int   `json:"logins"`
	Revocations int   `json:"revocations"`
	Served      int64 `json:"served"`
	Denied      int64 `json:"denied"`
}

func newUpstream(password string) *upstream {
	return &upstream{
		emu: guacamoletest.New(guacamoletest.Options{
			BasePath: basePath,
			Users:    map[string]guacamoletest.User{benchUser: {Password: password}},
			// Every identity of the bench logs in from 127.0.0.1; none
			// fails, but a ban would end the run rather than measure it.
			DisableBan: true,
		}),
		body: connectionList(),
	}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(p, basePath+"/api/session/data/"):
		u.rest(w, r)
	case p == basePath+"/api/tokens" && r.Method == http.MethodPost:
		rec := u.relay(w, r)
		if rec.Code == http.StatusOK {
			var s struct {
				AuthToken string `json:"authToken"`
			}
			if json.Unmarshal(rec.Body.Bytes(), &s) == nil && s.AuthToken != "" {
				u.live.Store(s.AuthToken, struct{}{})
			}
		}
	case strings.HasPrefix(p, basePath+"/api/tokens/") && r.Method == http.MethodDelete:
		if rec := u.relay(w, r); rec.Code == http.StatusNoContent {
			u.live.Delete(strings.TrimPrefix(p, basePath+"/api/tokens/"))
		}
	case p == basePath+"/api/session" && r.Method == http.MethodDelete:
		tok := r.Header.Get("Guacamole-Token")
		if rec := u.relay(w, r); rec.Code == http.StatusNoContent {
			u.live.Delete(tok)
		}
	case p == statsPath:
		st := u.emu.Stats()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(upstreamStats{
			Logins: st.Logins, Revocations: st.Revocations,
			Served: u.served.Load(), Denied: u.denied.Load(),
		})
	default:
		u.emu.ServeHTTP(w, r)
	}
}

// rest is the fast path: Guacamole's answer to a data call, without
// Guacamole's cost.
func (u *upstream) rest(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if _, ok := u.live.Load(r.Header.Get("Guacamole-Token")); !ok {
		u.denied.Add(1)
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write(deniedJSON)
		return
	}
	u.served.Add(1)
	h.Set("Content-Length", strconv.Itoa(len(u.body)))
	_, _ = w.Write(u.body)
}

// relay lets the emulator answer r and returns what it answered.
func (u *upstream) relay(w http.ResponseWriter, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	u.emu.ServeHTTP(rec, r)
	for k, vs := range rec.Header() {
		w.Header()[k] = vs
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
	return rec
}

// deniedJSON is Guacamole's answer to a call with a token it does not know.
var deniedJSON = []byte(`{"message":"Permission Denied.","translatableMessage":` +
	`{"key":"APP.TEXT_UNTRANSLATED","variables":{"MESSAGE":"Permission Denied."}},` +
	`"statusCode":null,"expected":null,"patches":null,"type":"PERMISSION_DENIED"}`)

// connectionList returns a Guacamole-style connection list of about 1 KiB.
func connectionList() []byte { return guacamoletest.ConnectionList(960) }

// cmdUpstream serves the stand-in until SIGINT or SIGTERM. The password of
// benchUser comes from the environment, not the command line.
func cmdUpstream(args []string) int {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	password := os.Getenv(passwordEnv)
	if password == "" {
		fmt.Fprintf(os.Stderr, "guacbench upstream: %s is not set\n", passwordEnv)
		return 2
	}
	return serveUntilSignal("upstream", *listen, newUpstream(password))
}
