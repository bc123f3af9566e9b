package proxy

import (
	"io"
	"net/http/httptest"
	"testing"

	"github.com/guacproxy/guacproxy/proxy/metrics"
)

// scrape returns the text exposition of m.
func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}
