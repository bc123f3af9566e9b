// Package metrics holds guacproxy's Prometheus metrics. Every label value
// comes from the configuration (identity names) or from a fixed set (status
// codes, results), never from request data, so the number of series is
// bounded by the configuration.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/guacproxy/guacproxy/tokencache"
)

// Unidentified is the identity label of requests no identity was found for.
const Unidentified = "none"

// Metrics are guacproxy's collectors. A nil *Metrics records nothing.
type Metrics struct {
	reg *prometheus.Registry

	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	upstreamDuration prometheus.Histogram
	logins           *prometheus.CounterVec
	revocations      *prometheus.CounterVec
	cacheLookups     *prometheus.CounterVec
	tunnelsOpen      *prometheus.GaugeVec

	// Pre-resolved children for the hot path.
	hit, miss prometheus.Counter
}

// New returns the metrics registered on a fresh registry, with Go runtime
// and process collectors. tokensLive reports the number of live tokens.
func New(tokensLive func() float64) *Metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guacproxy_requests_total",
			Help: "Requests served, by identity and HTTP status code.",
		}, []string{"identity", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "guacproxy_request_duration_seconds",
			Help:    "Time to serve a request, by identity; tunnels count until they close.",
			Buckets: buckets,
		}, []string{"identity"}),
		upstreamDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "guacproxy_upstream_duration_seconds",
			Help:    "Time Guacamole took to answer a forwarded request, up to its headers.",
			Buckets: buckets,
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guacproxy_logins_total",
			Help: "Logins to Guacamole, by identity and result.",
		}, []string{"identity", "result"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guacproxy_revocations_total",
			Help: "Token revocations, by result.",
		}, []string{"result"}),
		cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "guacproxy_cache_lookups_total",
			Help: "Token cache lookups, by result (hit or miss).",
		}, []string{"result"}),
		tunnelsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "guacproxy_tunnels_open",
			Help: "Open remote desktop tunnels, by identity.",
		}, []string{"identity"}),
	}
	m.hit = m.cacheLookups.WithLabelValues("hit")
	m.miss = m.cacheLookups.WithLabelValues("miss")
	m.reg.MustRegister(m.requests, m.requestDuration, m.upstreamDuration, m.logins,
		m.revocations, m.cacheLookups, m.tunnelsOpen,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "guacproxy_tokens_live",
			Help: "Guacamole tokens held and not yet revoked.",
		}, tokensLive),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Init creates the series of each identity at zero, so that dashboards and
// rate() see them before the first event.
func (m *Metrics) Init(identities []string) {
	if m == nil {
		return
	}
	for _, id := range identities {
		m.tunnelsOpen.WithLabelValues(id)
		for _, r := range []string{tokencache.LoginOK, tokencache.LoginInvalidCredentials,
			tokencache.LoginMFARequired, tokencache.LoginBanned, tokencache.LoginError} {
			m.logins.WithLabelValues(id, r)
		}
	}
	for _, r := range []string{tokencache.RevokeOK, tokencache.RevokeAlreadyGone, tokencache.RevokeError} {
		m.revocations.WithLabelValues(r)
	}
}

// Handler serves the metrics in Prometheus' exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Request records a served request.
func (m *Metrics) Request(identity string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(identity, codeLabel(code)).Inc()
	m.requestDuration.WithLabelValues(identity).Observe(d.Seconds())
}

// codes holds the label of every HTTP status code, so that recording a
// request does not format one.
var codes = func() (c [600]string) {
	for i := range c {
		c[i] = strconv.Itoa(i)
	}
	return c
}()

func codeLabel(code int) string {
	if code >= 0 && code < len(codes) {
		return codes[code]
	}
	return strconv.Itoa(code)
}

// Upstream records how long Guacamole took to answer.
func (m *Metrics) Upstream(d time.Duration) {
	if m == nil {
		return
	}
	m.upstreamDuration.Observe(d.Seconds())
}

// TunnelOpened and TunnelClosed track open tunnels.
func (m *Metrics) TunnelOpened(identity string) {
	if m != nil {
		m.tunnelsOpen.WithLabelValues(identity).Inc()
	}
}

// TunnelClosed records that a tunnel of identity closed.
func (m *Metrics) TunnelClosed(identity string) {
	if m != nil {
		m.tunnelsOpen.WithLabelValues(identity).Dec()
	}
}

// Lookup implements tokencache.Observer.
func (m *Metrics) Lookup(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.hit.Inc()
	} else {
		m.miss.Inc()
	}
}

// Login implements tokencache.Observer.
func (m *Metrics) Login(identity, result string) {
	if m != nil {
		m.logins.WithLabelValues(identity, result).Inc()
	}
}

// Revocation implements tokencache.Observer.
func (m *Metrics) Revocation(result string) {
	if m != nil {
		m.revocations.WithLabelValues(result).Inc()
	}
}

var _ tokencache.Observer = (*Metrics)(nil)
