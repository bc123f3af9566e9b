package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/guacproxy/guacproxy/tokencache"
)

// Identity is a configured service identity: its Guacamole account, how a
// caller is recognised as it, and what it may do.
type Identity struct {
	tokencache.Identity
	// APIKeyHashes are SHA-256 sums of the API keys a caller may present as
	// "Authorization: Bearer <key>".
	APIKeyHashes [][32]byte
	// Default makes this the identity of callers that match no other.
	Default bool
	// ClientCert matches a verified client certificate by name.
	ClientCert CertMatch
	// Header matches a header set by a trusted proxy.
	Header HeaderMatch
	// SourceNets match the TCP peer's address.
	SourceNets []netip.Prefix
	// Allow lists the requests the identity may make; empty allows all.
	Allow []Rule

	policy policy
}

// CertMatch accepts a client certificate carrying any of the names.
type CertMatch struct {
	URIs        []string
	DNSNames    []string
	CommonNames []string
}

func (m CertMatch) empty() bool {
	return len(m.URIs) == 0 && len(m.DNSNames) == 0 && len(m.CommonNames) == 0
}

func (m CertMatch) matches(cert *x509.Certificate) bool {
	for _, u := range cert.URIs {
		if slices.Contains(m.URIs, u.String()) {
			return true
		}
	}
	for _, d := range cert.DNSNames {
		if slices.Contains(m.DNSNames, d) {
			return true
		}
	}
	return cert.Subject.CommonName != "" && slices.Contains(m.CommonNames, cert.Subject.CommonName)
}

// HeaderMatch accepts a request whose header Name has Value, or, with
// XFCCURI, whose Envoy X-Forwarded-Client-Cert header's last element has
// that URI.
type HeaderMatch struct {
	Name    string
	Value   string
	XFCCURI string
}

func (m HeaderMatch) matches(h http.Header) bool {
	vs := h.Values(m.Name)
	// A header a proxy set once is trusted; several values mean someone
	// else added one, and it is not clear which is whose.
	if len(vs) != 1 {
		return false
	}
	if m.XFCCURI != "" {
		return xfccURI(vs[0]) == m.XFCCURI
	}
	return vs[0] == m.Value
}

// xfccURI returns the URI of the last element of an Envoy
// X-Forwarded-Client-Cert header: the certificate of the client that
// connected to the nearest proxy, which each proxy appends.
func xfccURI(v string) string {
	elems := splitQuoted(v, ',')
	if len(elems) == 0 {
		return ""
	}
	for _, kv := range splitQuoted(elems[len(elems)-1], ';') {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && strings.EqualFold(k, "URI") {
			return strings.Trim(val, `"`)
		}
	}
	return ""
}

// splitQuoted splits s at sep outside double quotes.
func splitQuoted(s string, sep byte) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == sep && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// identities resolves which identity a request comes from.
type identities struct {
	all     []*Identity
	byName  map[string]*Identity
	byKey   map[[32]byte]int // API key hash -> index in all
	matched []int            // indexes of identities with non-key matchers
	def     *Identity
	trusted []netip.Prefix
	// headers are the names of identity headers: removed from every
	// forwarded request, believed only from trusted proxies.
	headers []string
}

func newIdentities(ids []Identity, trusted []netip.Prefix) (*identities, error) {
	r := &identities{byKey: make(map[[32]byte]int), byName: make(map[string]*Identity), trusted: trusted}
	for i := range ids {
		id := new(Identity)
		*id = ids[i]
		id.policy = compilePolicy(id.Allow)
		if _, dup := r.byName[id.Name]; dup {
			return nil, fmt.Errorf("two identities are named %q", id.Name)
		}
		r.byName[id.Name] = id
		r.all = append(r.all, id)
		for _, h := range id.APIKeyHashes {
			if other, dup := r.byKey[h]; dup {
				return nil, fmt.Errorf("identities %q and %q share an API key", ids[other].Name, id.Name)
			}
			r.byKey[h] = i
		}
		if id.Default {
			if r.def != nil {
				return nil, fmt.Errorf("identities %q and %q are both the default", r.def.Name, id.Name)
			}
			r.def = id
		}
		if id.Header.Name != "" {
			if len(trusted) == 0 {
				return nil, fmt.Errorf("identity %q has a header matcher but no proxy is trusted", id.Name)
			}
			name := http.CanonicalHeaderKey(id.Header.Name)
			if !slices.Contains(r.headers, name) {
				r.headers = append(r.headers, name)
			}
		}
		if !id.ClientCert.empty() || id.Header.Name != "" || len(id.SourceNets) > 0 {
			r.matched = append(r.matched, i)
		}
	}
	return r, nil
}

// explicit returns the first identity, in configured order, that one of its
// matchers accepts, or nil. The default identity is not considered.
//
// API keys are looked up by their SHA-256: a lookup's timing can only tell a
// caller about the hash of the key it sent, which it can compute itself, so
// no comparison of secrets leaks.
func (ids *identities) explicit(r *http.Request) *Identity {
	keyIdx := len(ids.all)
	if key, ok := bearer(r.Header.Get("Authorization")); ok {
		if i, ok := ids.byKey[sha256.Sum256([]byte(key))]; ok {
			keyIdx = i
		}
	}
	if len(ids.matched) > 0 && ids.matched[0] < keyIdx {
		peer := peerAddr(r)
		trusted := containsAddr(ids.trusted, peer)
		for _, i := range ids.matched {
			if i >= keyIdx {
				break
			}
			if ids.all[i].matches(r, peer, trusted) {
				return ids.all[i]
			}
		}
	}
	if keyIdx < len(ids.all) {
		return ids.all[keyIdx]
	}
	return nil
}

// byAPIKey returns the identity whose API key is key, or nil.
func (ids *identities) byAPIKey(key string) *Identity {
	if i, ok := ids.byKey[sha256.Sum256([]byte(key))]; ok {
		return ids.all[i]
	}
	return nil
}

func (id *Identity) matches(r *http.Request, peer netip.Addr, trusted bool) bool {
	if !id.ClientCert.empty() && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 &&
		id.ClientCert.matches(r.TLS.VerifiedChains[0][0]) {
		return true
	}
	if trusted && id.Header.Name != "" && id.Header.matches(r.Header) {
		return true
	}
	return containsAddr(id.SourceNets, peer)
}

// stripHeaders removes the identity headers from h: they are meant for
// guacproxy only, and from an untrusted peer they may be forged.
func (ids *identities) stripHeaders(h http.Header) {
	for _, name := range ids.headers {
		delete(h, name)
	}
}

func peerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, _ := netip.ParseAddr(host)
	return addr.Unmap()
}

func containsAddr(nets []netip.Prefix, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	for _, n := range nets {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// bearer extracts the credentials of an "Authorization: Bearer" header.
func bearer(h string) (string, bool) {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	return strings.TrimSpace(h[len(scheme):]), true
}
