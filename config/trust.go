package config

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// checkTLS loads the inbound TLS files. It returns nil values where a file
// could not be used.
func checkTLS(r *report, t TLS) (*tls.Certificate, bool) {
	ok := true
	switch {
	case t.CertFile == "" && t.KeyFile == "" && t.ClientCAFile != "":
		r.add("tls.client_ca_file", "needs tls.cert_file and tls.key_file: "+
			"client certificates are only asked for over TLS")
		return nil, false
	case t.CertFile == "" && t.KeyFile == "":
		return nil, true
	case t.CertFile == "":
		r.add("tls.cert_file", "required when tls.key_file is set")
		return nil, false
	case t.KeyFile == "":
		r.add("tls.key_file", "required when tls.cert_file is set")
		return nil, false
	}
	for path, file := range map[string]string{"tls.cert_file": t.CertFile, "tls.key_file": t.KeyFile} {
		if _, err := readFile(file, maxCAFile); err != nil {
			r.add(path, "%s", describeReadError(err))
			ok = false
		}
	}
	if !ok {
		return nil, false
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		// The error describes the PEM content, never the key's bytes.
		r.addFrom([]string{"tls.key_file"}, "tls.cert_file", "cannot be used with tls.key_file: %v", err)
		return nil, false
	}
	return &cert, true
}

// checkCIDRs parses a list of CIDRs; a bare address stands for itself.
func checkCIDRs(r *report, path string, list []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		if pfx, err := netip.ParsePrefix(s); err == nil {
			out = append(out, pfx.Masked())
			continue
		}
		if addr, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
			continue
		}
		r.add(p, "%q is not a CIDR such as 10.0.0.0/8 or an IP address", s)
	}
	return out
}

// checkMatchers checks the matchers of identity id at path p beyond API keys
// and default, which checkIdentities handles.
func (c *Config) checkMatchers(r *report, p string, id Identity) []netip.Prefix {
	cc := id.ClientCert
	if !cc.Empty() && c.TLS.ClientCAFile == "" {
		r.addFrom([]string{"tls.client_ca_file"}, p+".client_cert",
			"needs tls.client_ca_file, or no client certificate is ever verified")
	}
	for _, list := range []struct {
		name  string
		names []string
	}{{"uri", cc.URIs}, {"dns", cc.DNSNames}, {"cn", cc.CommonNames}} {
		for i, n := range list.names {
			if strings.TrimSpace(n) == "" {
				r.add(fmt.Sprintf("%s.client_cert.%s[%d]", p, list.name, i), "must not be empty")
			}
		}
	}

	h := id.Header
	if h != (HeaderMatch{}) {
		hp := p + ".header"
		switch {
		case h.Name == "":
			r.add(hp+".name", "required")
		case !isToken(h.Name):
			r.add(hp+".name", "%q is not a valid header name", h.Name)
		case isReservedHeader(h.Name):
			r.add(hp+".name", "%s cannot carry an identity", http.CanonicalHeaderKey(h.Name))
		}
		if (h.Value == "") == (h.XFCCURI == "") {
			r.add(hp, "set exactly one of value and xfcc_uri")
		}
		if len(c.TrustedProxies) == 0 {
			r.addFrom([]string{"trusted_proxies"}, hp, "needs trusted_proxies: a header "+
				"is only believed from the front proxies listed there")
		}
	}

	nets := checkCIDRs(r, p+".source_cidrs", id.SourceCIDRs)
	for i, rule := range id.Allow {
		rp := fmt.Sprintf("%s.allow[%d]", p, i)
		for j, m := range rule.Methods {
			if m == "" || !isToken(m) || strings.ToUpper(m) != m {
				r.add(fmt.Sprintf("%s.methods[%d]", rp, j), "%q is not an upper-case HTTP method", m)
			}
		}
		if len(rule.Paths) == 0 {
			r.add(rp+".paths", "at least one path pattern is required")
		}
		for j, pat := range rule.Paths {
			if msg := checkPattern(pat); msg != "" {
				r.add(fmt.Sprintf("%s.paths[%d]", rp, j), "%s", msg)
			}
		}
	}
	return nets
}

// recognisable reports whether some request could ever be served as id.
func recognisable(id Identity) bool {
	return len(id.APIKeysSHA256) > 0 || id.Default || !id.ClientCert.Empty() ||
		id.Header != (HeaderMatch{}) || len(id.SourceCIDRs) > 0
}

// isReservedHeader reports whether name is a header guacproxy itself reads
// or rewrites, which an identity header must not be.
func isReservedHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Authorization", "Guacamole-Token", "Host", "Content-Length", "Content-Type",
		"Connection", "Upgrade", "Guacamole-Tunnel-Token":
		return true
	}
	return false
}

// checkPattern returns why a path pattern is invalid, or "".
func checkPattern(pat string) string {
	if !strings.HasPrefix(pat, "/") {
		return fmt.Sprintf("%q must start with /", pat)
	}
	for _, seg := range strings.Split(pat[1:], "/") {
		if strings.Contains(seg, "*") && seg != "*" && seg != "**" {
			return fmt.Sprintf("%q: * and ** must stand alone between slashes", pat)
		}
	}
	return ""
}

// isToken reports whether s is an HTTP token (RFC 9110), the syntax of
// header names and methods.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c >= 0x80 || c <= ' ' || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 || c == 0x7f {
			return false
		}
	}
	return true
}
