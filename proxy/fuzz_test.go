package proxy

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/guacproxy/guacproxy/tokencache"
)

// FuzzStripTokenParam checks that no token parameter survives, however it
// is spelt, and that the other parameters keep their order and encoding.
func FuzzStripTokenParam(f *testing.F) {
	for _, seed := range []string{
		"", "token=a", "a=1&token=b&c=3", "TOKEN=x&Token=y", "%74oken=x", "to%6Ben=x&to%6ben=y",
		"token", "&&&", "a=%zz&token=1", "t%6Fken=1;token=2", "token%3D=1", "GUAC_ID=1&GUAC_AUDIO=a&GUAC_AUDIO=b",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, query string) {
		out := stripTokenParam(query)
		rest := query
		for _, part := range strings.Split(out, "&") {
			if part == "" {
				continue
			}
			name, _, _ := strings.Cut(part, "=")
			dec, err := url.QueryUnescape(name)
			if err != nil || strings.EqualFold(dec, "token") {
				t.Fatalf("stripTokenParam(%q) kept %q", query, part)
			}
			i := strings.Index(rest, part)
			if i < 0 {
				t.Fatalf("stripTokenParam(%q) = %q: %q is not from the input, in order", query, out, part)
			}
			rest = rest[i+len(part):]
		}
		// Whatever Go's own parser makes of the result has no token either.
		if v, _ := url.ParseQuery(out); v.Has("token") {
			t.Fatalf("stripTokenParam(%q) = %q still parses with a token", query, out)
		}
	})
}

// FuzzIdentify checks that an identity header from an untrusted peer never
// identifies anyone, and that resolution never panics.
func FuzzIdentify(f *testing.F) {
	f.Add("Bearer "+toolKey, "dashboard", "URI=spiffe://x", "10.1.2.3:4567")
	f.Add("bearer  "+toolKey+" ", "dashboard", "", "127.0.0.1:1")
	f.Add("Basic eDp5", "", "By=a;URI=\"spiffe://x\",URI=spiffe://x", "[::1]:80")
	f.Add("", "dashboard", "", "garbage")
	f.Fuzz(func(t *testing.T, authz, ident, xfcc, remote string) {
		ids, err := newIdentities([]Identity{
			{Identity: dashboard, Header: meshHeader},
			{Identity: tokencache.Identity{Name: "mesh"},
				Header: HeaderMatch{Name: "X-Forwarded-Client-Cert", XFCCURI: "spiffe://x"}},
			{Identity: tool, APIKeyHashes: [][32]byte{sha256.Sum256([]byte(toolKey))}},
		}, elsewhere)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/api/session/data/default/self", nil)
		r.RemoteAddr = remote
		r.Header.Set("Authorization", authz)
		r.Header.Set("X-Service-Identity", ident)
		r.Header.Set("X-Forwarded-Client-Cert", xfcc)

		id := ids.explicit(r)
		trusted := containsAddr(elsewhere, peerAddr(r))
		if id != nil && id.Header.Name != "" && !trusted {
			t.Fatalf("peer %q, not trusted, was identified as %q by a header", remote, id.Name)
		}
		if id != nil && id.Name == "tool" {
			if key, _ := bearer(authz); key != toolKey {
				t.Fatalf("identified as tool without its key")
			}
		}
		ids.stripHeaders(r.Header)
		if r.Header.Get("X-Service-Identity") != "" || r.Header.Get("X-Forwarded-Client-Cert") != "" {
			t.Fatal("identity headers survived stripping")
		}
	})
}
