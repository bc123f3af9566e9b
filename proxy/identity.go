package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"

	"github.com/guacproxy/guacproxy/tokencache"
)

// Identity is a configured service identity: its Guacamole account and how a
// caller is recognised as it.
type Identity struct {
	tokencache.Identity
	// APIKeyHashes are SHA-256 sums of the API keys a caller may present as
	// "Authorization: Bearer <key>".
	APIKeyHashes [][32]byte
	// Default makes this the identity of callers that match no other.
	Default bool
}

// identities resolves which identity a request comes from.
type identities struct {
	byKey map[[32]byte]*Identity
	def   *Identity
}

func newIdentities(ids []Identity) (*identities, error) {
	r := &identities{byKey: make(map[[32]byte]*Identity)}
	for i := range ids {
		id := &ids[i]
		for _, h := range id.APIKeyHashes {
			if other, dup := r.byKey[h]; dup {
				return nil, fmt.Errorf("identities %q and %q share an API key", other.Name, id.Name)
			}
			r.byKey[h] = id
		}
		if id.Default {
			if r.def != nil {
				return nil, fmt.Errorf("identities %q and %q are both the default", r.def.Name, id.Name)
			}
			r.def = id
		}
	}
	return r, nil
}

// resolve returns the identity of r, or nil. The key is looked up by its
// SHA-256: a lookup's timing can only tell a caller about the hash of the key
// it sent, which it can compute itself, so no comparison of secrets leaks.
func (ids *identities) resolve(r *http.Request) *Identity {
	if key, ok := bearer(r.Header.Get("Authorization")); ok {
		if id := ids.byKey[sha256.Sum256([]byte(key))]; id != nil {
			return id
		}
	}
	return ids.def
}

// bearer extracts the credentials of an "Authorization: Bearer" header.
func bearer(h string) (string, bool) {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	return strings.TrimSpace(h[len(scheme):]), true
}

type ctxKey struct{}

// call is what the handler learned about a request before forwarding it.
type call struct {
	identity *Identity
	token    *tokencache.Token
}

func withCall(ctx context.Context, c *call) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(ctxKey{}).(*call)
	return c
}
