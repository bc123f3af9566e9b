package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// tokenHeader is where Guacamole 1.4+ reads a REST call's token from. It
// prefers the header over the query, so a client's header, even a bad one,
// would beat ours in the query: both are removed.
const tokenHeader = "Guacamole-Token"

// stripClientCredentials removes every token and credential a client sent:
// Guacamole-Token headers in any spelling, the Authorization header (it
// carries guacproxy's API key, or Basic credentials Guacamole would read on
// login), and every token query parameter.
func stripClientCredentials(h http.Header, u *url.URL) {
	for k := range h {
		if strings.EqualFold(k, tokenHeader) || strings.EqualFold(k, "Authorization") {
			delete(h, k)
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = stripTokenParam(u.RawQuery)
	}
}

// stripTokenParam returns query without any parameter whose decoded name is
// "token" in any case. The other parameters keep their order and their exact
// encoding, since Guacamole's tunnel requests depend on both. A parameter
// whose name does not decode is dropped too: it cannot be told apart from a
// disguised token.
func stripTokenParam(query string) string {
	if !mayHoldToken(query) {
		return query
	}
	var b strings.Builder
	b.Grow(len(query))
	dropped := false
	rest := query
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		if part == "" {
			dropped = true
			continue
		}
		name, _, _ := strings.Cut(part, "=")
		if isTokenName(name) {
			dropped = true
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	if !dropped {
		return query
	}
	return b.String()
}

// isTokenName reports whether a raw parameter name decodes to "token" in
// any case, or does not decode at all.
func isTokenName(name string) bool {
	if strings.ContainsAny(name, "%+") {
		dec, err := url.QueryUnescape(name)
		return err != nil || strings.EqualFold(dec, "token")
	}
	return strings.EqualFold(name, "token")
}

// mayHoldToken is a cheap pre-check that lets the common query with no token
// parameter pass without being rebuilt: a token name needs a "k" or "K" in
// clear or an escape.
func mayHoldToken(query string) bool {
	return strings.IndexByte(query, 'k') >= 0 || strings.IndexByte(query, 'K') >= 0 ||
		strings.IndexByte(query, '%') >= 0
}
