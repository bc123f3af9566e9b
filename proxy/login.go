package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/tokencache"
)

// maxLoginBody bounds a login form: a username, a password and a token.
const maxLoginBody = 64 << 10

var (
	errBadLogin     = errors.New("login is not form-encoded")
	errLoginRefused = errors.New("login refused")
	errBadToken     = errors.New("unknown token")
	errNoSuchToken  = errors.New("no such token")
	errOtherPhantom = errors.New("token of another identity")
)

// phantoms are the token-shaped handles guacproxy hands to clients that log
// in through it. A phantom stands for its identity wherever Guacamole reads a
// token, and is replaced by the identity's real token; the real token never
// leaves guacproxy. Phantoms expire after the same idle time as Guacamole's
// sessions, so clients see the expiry they already handle.
type phantoms struct {
	idle  time.Duration
	count atomic.Int64 // lets requests skip the lookup when there are none

	mu     sync.Mutex
	tokens map[string]*phantom
}

// phantom is bound to its identity by name, so that it survives a reload
// that leaves the identity in place and dies with one that removes it.
type phantom struct {
	identity string
	lastUsed time.Time
}

func newPhantoms(idle time.Duration) *phantoms {
	return &phantoms{idle: idle, tokens: make(map[string]*phantom)}
}

// issue returns a new phantom for id, shaped like a Guacamole token: 32
// random bytes as 64 upper-case hex digits.
func (ps *phantoms) issue(identity string, now time.Time) string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	tok := strings.ToUpper(hex.EncodeToString(b[:]))
	ps.mu.Lock()
	ps.tokens[tok] = &phantom{identity: identity, lastUsed: now}
	ps.mu.Unlock()
	ps.count.Add(1)
	return tok
}

// lookup returns the identity name of a live phantom and marks it used.
func (ps *phantoms) lookup(tok string, now time.Time) string {
	if tok == "" || ps.count.Load() == 0 {
		return ""
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.tokens[tok]
	if p == nil {
		return ""
	}
	if now.Sub(p.lastUsed) >= ps.idle {
		delete(ps.tokens, tok)
		ps.count.Add(-1)
		return ""
	}
	p.lastUsed = now
	return p.identity
}

// forget ends a phantom and reports whether it existed.
func (ps *phantoms) forget(tok string) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if _, ok := ps.tokens[tok]; !ok {
		return false
	}
	delete(ps.tokens, tok)
	ps.count.Add(-1)
	return true
}

// sweep drops phantoms idle for too long.
func (ps *phantoms) sweep(now time.Time) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for tok, p := range ps.tokens {
		if now.Sub(p.lastUsed) >= ps.idle {
			delete(ps.tokens, tok)
			ps.count.Add(-1)
		}
	}
}

// presentedToken returns the token a REST request carries, read the way
// Guacamole reads it: a non-empty Guacamole-Token header, else the first
// token query parameter.
func presentedToken(r *http.Request) string {
	if tok := r.Header.Get(tokenHeader); tok != "" {
		return tok
	}
	if !strings.Contains(r.URL.RawQuery, "token") {
		return ""
	}
	return r.URL.Query().Get("token")
}

// identify decides which identity serves r. presented is the token r
// carries, if any: a phantom identifies its identity, but not against an
// identity proven otherwise; a token that is no phantom is refused as
// Guacamole refuses an unknown token, unless a default identity takes the
// request anyway.
func (p *Proxy) identify(r *http.Request, presented string) (*Identity, error) {
	ids := p.identities()
	id := ids.explicit(r)
	if ph := ids.byName[p.phantoms.lookup(presented, time.Now())]; ph != nil {
		if id != nil && id != ph {
			return nil, errOtherPhantom
		}
		return ph, nil
	}
	switch {
	case id != nil:
		return id, nil
	case ids.def != nil:
		return ids.def, nil
	case presented != "":
		return nil, errBadToken
	}
	return nil, errUnidentified
}

// authorize checks id's allow list, logging a refusal as an audit event.
func (p *Proxy) authorize(id *Identity, r *http.Request) error {
	if id.policy.allows(r.Method, r.URL.Path) {
		return nil
	}
	p.log.Warn("request denied by policy", zap.String("identity", id.Name),
		zap.String("method", r.Method), zap.String("path", logPath(r)))
	return &deniedError{identity: id.Name, method: r.Method, path: r.URL.Path, rules: len(id.policy)}
}

// login answers POST /api/tokens locally. An identified caller (or one whose
// posted password is one of an identity's API keys) gets a phantom token in
// Guacamole's response shape, with the identity's real username and data
// sources. Posted credentials are never forwarded.
func (p *Proxy) login(w http.ResponseWriter, r *http.Request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		p.writeError(w, r, errBadLogin)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		p.writeError(w, r, errBadLogin)
		return
	}

	now := time.Now()
	posted := r.PostForm.Get("token")
	ids := p.identities()
	id := ids.explicit(r)
	if ph := ids.byName[p.phantoms.lookup(posted, now)]; ph != nil && (id == nil || id == ph) {
		// Guacamole answers a re-auth of a live token with the same
		// token; so does guacproxy for a live phantom.
		p.answerLogin(w, r, ph, posted)
		return
	}
	if id == nil {
		if pw := r.PostForm.Get("password"); pw != "" {
			id = ids.byAPIKey(pw)
		}
	}
	if id == nil {
		id = ids.def
	}
	if id == nil {
		p.writeError(w, r, errLoginRefused)
		return
	}
	p.answerLogin(w, r, id, "")
}

func (p *Proxy) answerLogin(w http.ResponseWriter, r *http.Request, id *Identity, phantom string) {
	exchangeFrom(r.Context()).identity = id
	tok, err := p.tokens.Token(r.Context(), id.Identity)
	if err != nil {
		p.writeError(w, r, &loginError{identity: id.Name, err: err})
		return
	}
	if phantom == "" {
		phantom = p.phantoms.issue(id.Name, time.Now())
		p.log.Info("client logged in", zap.String("identity", id.Name),
			zap.String("phantom_fp", tokencache.Fingerprint(phantom)))
	}
	//nolint:gosec // the phantom is handed out on purpose; the real token is not in it
	body, _ := json.Marshal(struct {
		AuthToken            string   `json:"authToken"`
		Username             string   `json:"username"`
		DataSource           string   `json:"dataSource"`
		AvailableDataSources []string `json:"availableDataSources"`
	}{phantom, tok.Username(), tok.DataSource(), tok.AvailableDataSources()})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// logout answers DELETE /api/tokens/{token} locally: a phantom is
// forgotten; the real token stays for the identity's other clients.
func (p *Proxy) logout(w http.ResponseWriter, r *http.Request) {
	if !p.phantoms.forget(mux.Vars(r)["token"]) {
		p.writeError(w, r, errNoSuchToken)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// endSession answers DELETE /api/session, which in Guacamole ends the
// session of the token it carries: for a phantom, the phantom ends.
func (p *Proxy) endSession(w http.ResponseWriter, r *http.Request) {
	if !p.phantoms.forget(presentedToken(r)) {
		p.writeError(w, r, &blockedError{msg: "guacproxy manages the Guacamole session: " +
			"only a token guacproxy issued can be ended."})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
