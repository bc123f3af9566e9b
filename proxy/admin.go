package proxy

import (
	"net/http"
	"sync/atomic"

	"github.com/gorilla/mux"
)

// Readiness tells whether guacproxy should receive traffic. The zero value is
// not ready.
type Readiness struct{ ready atomic.Bool }

// Set marks guacproxy ready or not.
func (r *Readiness) Set(ready bool) { r.ready.Store(ready) }

// Ready reports whether guacproxy is ready.
func (r *Readiness) Ready() bool { return r.ready.Load() }

// AdminHandler serves the admin listener: /healthz answers 200 while the
// process runs, /readyz 200 only while ready is set, and /metrics serves
// metrics if it is not nil.
func AdminHandler(ready *Readiness, metrics http.Handler) http.Handler {
	r := mux.NewRouter()
	if metrics != nil {
		r.Path("/metrics").Methods(http.MethodGet).Handler(metrics)
	}
	r.Path("/healthz").Methods(http.MethodGet, http.MethodHead).HandlerFunc(
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("ok\n"))
		})
	r.Path("/readyz").Methods(http.MethodGet, http.MethodHead).HandlerFunc(
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if !ready.Ready() {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("not ready\n"))
				return
			}
			_, _ = w.Write([]byte("ready\n"))
		})
	return r
}
