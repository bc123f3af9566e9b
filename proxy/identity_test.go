package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/guacproxy/guacproxy/tokencache"
)

var (
	loopback   = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	elsewhere  = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	dashboard  = tokencache.Identity{Name: "dashboard", Username: "svc-reporting", Password: "reporting-pw-secret"}
	meshHeader = HeaderMatch{Name: "X-Service-Identity", Value: "dashboard"}
)

func TestHeaderMatcherTrustsOnlyTrustedProxies(t *testing.T) {
	tests := []struct {
		name     string
		trusted  []netip.Prefix
		header   http.Header
		wantUser string
	}{
		{"trusted peer", loopback, http.Header{"X-Service-Identity": {"dashboard"}}, reporting.Username},
		{"lower-case header name", loopback, http.Header{"x-service-identity": {"dashboard"}}, reporting.Username},
		{"wrong value", loopback, http.Header{"X-Service-Identity": {"other"}}, tool.Username},
		{"duplicated header", loopback, http.Header{"X-Service-Identity": {"dashboard", "dashboard"}}, tool.Username},
		{"untrusted peer", elsewhere, http.Header{"X-Service-Identity": {"dashboard"}}, tool.Username},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{trusted: tt.trusted, identities: []Identity{
				{Identity: dashboard, Header: meshHeader},
				{Identity: tool, Default: true},
			}})
			code, user := e.self(t, tt.header, "")
			if code != http.StatusOK || user != tt.wantUser {
				t.Errorf("self = %d %q; want 200 %q", code, user, tt.wantUser)
			}
			for k := range e.seen.last(t).Header {
				if strings.EqualFold(k, "X-Service-Identity") {
					t.Error("the identity header reached Guacamole")
				}
			}
		})
	}
}

func TestXFCCMatcher(t *testing.T) {
	const spiffe = "spiffe://cluster.local/ns/tools/sa/dashboard"
	tests := []struct {
		xfcc string
		want bool
	}{
		{`By=spiffe://cluster.local/ns/g/sa/guacproxy;Hash=abc;URI=` + spiffe, true},
		{`Hash=abc;Subject="CN=x,O=y";URI=` + spiffe, true},
		{`URI=` + spiffe + `,By=spiffe://a;URI=spiffe://cluster.local/ns/tools/sa/other`, false},
		{`URI=spiffe://cluster.local/ns/tools/sa/other,URI=` + spiffe, true},
		{`Hash=abc`, false},
		{``, false},
	}
	m := HeaderMatch{Name: "X-Forwarded-Client-Cert", XFCCURI: spiffe}
	for _, tt := range tests {
		h := http.Header{"X-Forwarded-Client-Cert": {tt.xfcc}}
		if got := m.matches(h); got != tt.want {
			t.Errorf("matches(%q) = %t; want %t", tt.xfcc, got, tt.want)
		}
	}
}

func TestFirstMatchingIdentityWins(t *testing.T) {
	e := newEnv(t, envOptions{identities: []Identity{
		{Identity: dashboard, SourceNets: loopback},
		{Identity: tool, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(toolKey))}},
	}})
	// The caller is on loopback and presents tool's key; dashboard comes
	// first in the configuration.
	if code, user := e.self(t, bearerHeader(toolKey), ""); code != http.StatusOK || user != dashboard.Username {
		t.Errorf("self = %d %q; want 200 %q", code, user, dashboard.Username)
	}

	e = newEnv(t, envOptions{identities: []Identity{
		{Identity: tool, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(toolKey))}},
		{Identity: dashboard, SourceNets: loopback},
	}})
	if code, user := e.self(t, bearerHeader(toolKey), ""); code != http.StatusOK || user != tool.Username {
		t.Errorf("self = %d %q; want 200 %q", code, user, tool.Username)
	}
	if code, user := e.self(t, nil, ""); code != http.StatusOK || user != dashboard.Username {
		t.Errorf("without a key: self = %d %q; want 200 %q", code, user, dashboard.Username)
	}
}

func TestClientCertificateMatcher(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name     string
		cert     *x509.Certificate
		wantCode int
		wantUser string
	}{
		{"SPIFFE URI SAN", &x509.Certificate{URIs: []*url.URL{mustURL("spiffe://cluster.local/ns/tools/sa/dashboard")}},
			http.StatusOK, reporting.Username},
		{"DNS SAN", &x509.Certificate{DNSNames: []string{"dashboard.tools.svc"}}, http.StatusOK, reporting.Username},
		{"subject CN", &x509.Certificate{Subject: pkix.Name{CommonName: "dashboard"}}, http.StatusOK, reporting.Username},
		{"other names", &x509.Certificate{Subject: pkix.Name{CommonName: "intruder"}}, http.StatusUnauthorized, ""},
		{"no certificate", nil, http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{
				identities: []Identity{{Identity: dashboard, ClientCert: CertMatch{
					URIs:        []string{"spiffe://cluster.local/ns/tools/sa/dashboard"},
					DNSNames:    []string{"dashboard.tools.svc"},
					CommonNames: []string{"dashboard"},
				}}},
				tls: &tls.Config{ClientCAs: ca.pool, ClientAuth: tls.VerifyClientCertIfGiven},
			})
			tr := e.front.Client().Transport.(*http.Transport)
			if tt.cert != nil {
				tr.TLSClientConfig.Certificates = []tls.Certificate{ca.issue(t, tt.cert)}
			}
			if code, user := e.self(t, nil, ""); code != tt.wantCode || user != tt.wantUser {
				t.Errorf("self = %d %q; want %d %q", code, user, tt.wantCode, tt.wantUser)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	e := newEnv(t, envOptions{identities: []Identity{{Identity: tool, Default: true, Allow: []Rule{
		{Methods: []string{"GET"}, Paths: []string{"/api/session/data/*/connections/**", "/api/session/data/*/self"}},
		{Paths: []string{"/websocket-tunnel"}},
	}}}})
	tests := []struct {
		method, path string
		want         int
	}{
		{"GET", "/api/session/data/default/connections", http.StatusOK},
		{"GET", "/api/session/data/default/connections/1", http.StatusOK},
		{"GET", "/api/session/data/default/self", http.StatusOK},
		{"POST", "/api/session/data/default/connections", http.StatusForbidden},
		{"GET", "/api/session/data/default/users", http.StatusForbidden},
		{"GET", "/api/session/data/default/self/permissions", http.StatusForbidden},
		{"GET", "/tunnel?read:x:0", http.StatusForbidden},
	}
	for _, tt := range tests {
		before := e.seen.count()
		resp, body := e.do(t, tt.method, tt.path, nil, strings.NewReader(""))
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s = %d; want %d", tt.method, tt.path, resp.StatusCode, tt.want)
			continue
		}
		if tt.want != http.StatusForbidden {
			continue
		}
		if path, _, _ := strings.Cut(tt.path, "?"); isTunnelPath(path) {
			continue
		}
		if got := guacError(t, body); got.Type != "PERMISSION_DENIED" || !strings.Contains(got.Message, `"tool"`) {
			t.Errorf("%s %s: error %+v; want PERMISSION_DENIED naming the identity", tt.method, tt.path, got)
		}
		if e.seen.count() != before {
			t.Errorf("%s %s: a denied request reached Guacamole", tt.method, tt.path)
		}
	}
	if !strings.Contains(logs.String(), "request denied by policy") {
		t.Error("no audit event for the denied requests")
	}
}

func TestMatchSegments(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/api/session/data/*/connections", "/api/session/data/mysql/connections", true},
		{"/api/session/data/*/connections", "/api/session/data/connections", false},
		{"/api/**", "/api", true},
		{"/api/**", "/api/a/b/c", true},
		{"/api/**/tree", "/api/a/b/tree", true},
		{"/api/**/tree", "/api/a/b/leaf", false},
		{"/**", "/", true},
		{"/websocket-tunnel", "/websocket-tunnel", true},
		{"/websocket-tunnel", "/websocket-tunnel/x", false},
	}
	for _, tt := range tests {
		p := compilePolicy([]Rule{{Paths: []string{tt.pattern}}})
		if got := p.allows("GET", tt.path); got != tt.want {
			t.Errorf("%q matches %q = %t; want %t", tt.pattern, tt.path, got, tt.want)
		}
	}
}

// testCA issues client certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "guacproxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
