package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestTrustRules(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string // problem paths
	}{
		{"header without trusted proxies", func(c *Config) {
			c.Identities[0].Header = HeaderMatch{Name: "X-Service-Identity", Value: "tool"}
		}, []string{"identities[0].header"}},
		{"header with both value and xfcc_uri", func(c *Config) {
			c.TrustedProxies = []string{"10.0.0.0/8"}
			c.Identities[0].Header = HeaderMatch{Name: "X-Id", Value: "a", XFCCURI: "spiffe://a"}
		}, []string{"identities[0].header"}},
		{"header naming a credential header", func(c *Config) {
			c.TrustedProxies = []string{"10.0.0.0/8"}
			c.Identities[0].Header = HeaderMatch{Name: "authorization", Value: "a"}
		}, []string{"identities[0].header.name"}},
		{"header name with a space", func(c *Config) {
			c.TrustedProxies = []string{"10.0.0.0/8"}
			c.Identities[0].Header = HeaderMatch{Name: "X Id", Value: "a"}
		}, []string{"identities[0].header.name"}},
		{"client_cert without a client CA", func(c *Config) {
			c.Identities[0].ClientCert = ClientCertMatch{CommonNames: []string{"tool"}}
		}, []string{"identities[0].client_cert"}},
		{"bad CIDRs", func(c *Config) {
			c.TrustedProxies = []string{"10.0.0.0/33", "fd00::/8"}
			c.Identities[0].SourceCIDRs = []string{"not-an-ip", "192.0.2.7"}
		}, []string{"trusted_proxies[0]", "identities[0].source_cidrs[0]"}},
		{"bad allow rules", func(c *Config) {
			c.Identities[0].Allow = []Rule{
				{Methods: []string{"get"}, Paths: []string{"/api/**"}},
				{Paths: []string{"api/x", "/api/a*b"}},
				{Methods: []string{"GET"}},
			}
		}, []string{"identities[0].allow[0].methods[0]", "identities[0].allow[1].paths[0]",
			"identities[0].allow[1].paths[1]", "identities[0].allow[2].paths"}},
		{"TLS key without certificate", func(c *Config) {
			c.TLS.KeyFile = "/nonexistent/key.pem"
		}, []string{"tls.cert_file"}},
		{"client CA without TLS", func(c *Config) {
			c.TLS.ClientCAFile = "/nonexistent/ca.pem"
		}, []string{"tls.client_ca_file"}},
		{"TLS files missing", func(c *Config) {
			c.TLS.CertFile, c.TLS.KeyFile = "/nonexistent/cert.pem", "/nonexistent/key.pem"
		}, []string{"tls.cert_file", "tls.key_file"}},
		{"only a source matcher is enough", func(c *Config) {
			c.Identities[0].Default = false
			c.Identities[0].SourceCIDRs = []string{"127.0.0.1"}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := validate(t, tt.change)
			got := paths(errs)
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("problems at %q; want %q\n%v", got, want, errs)
			}
		})
	}
}

func TestTrustValuesAreResolved(t *testing.T) {
	certFile, keyFile := writeTestCert(t)
	c, errs := validate(t, func(c *Config) {
		c.TLS = TLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: certFile}
		c.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1"}
		c.Identities[0].SourceCIDRs = []string{"fd00::/8"}
		c.Identities[0].ClientCert = ClientCertMatch{URIs: []string{"spiffe://cluster.local/ns/a/sa/b"}}
	})
	if errs != nil {
		t.Fatalf("unexpected problems: %v", errs)
	}
	if c.TLS.Certificate == nil || c.TLS.ClientCAs == nil {
		t.Error("TLS certificate or client CAs not loaded")
	}
	wantNets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}
	if !slices.Equal(c.TrustedProxyNets, wantNets) {
		t.Errorf("TrustedProxyNets = %v; want %v", c.TrustedProxyNets, wantNets)
	}
	if !slices.Equal(c.Identities[0].SourceNets, []netip.Prefix{netip.MustParsePrefix("fd00::/8")}) {
		t.Errorf("SourceNets = %v", c.Identities[0].SourceNets)
	}
}

// writeTestCert writes a self-signed certificate and its key as PEM files.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "guacproxy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}
