package guacamoletest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"mime"
	"net/http"
	"strings"
	"time"
)

// authResult is the body of a successful POST /api/tokens, with fields in
// Guacamole's order.
type authResult struct {
	AuthToken            string   `json:"authToken"`
	Username             string   `json:"username"`
	DataSource           string   `json:"dataSource"`
	AvailableDataSources []string `json:"availableDataSources"`
}

// failureRecord is the ban extension's per-address state.
type failureRecord struct {
	count int
	last  time.Time
}

// loginRequest is what a POST /api/tokens carries once parsed. A nil
// username or password means the field was absent, which Guacamole treats
// differently from an empty value.
type loginRequest struct {
	username *string
	password *string
	token    string
	// empty reports that the request carried no credentials and no
	// parameters at all, like the web UI's first anonymous attempt. The ban
	// extension ignores such requests entirely.
	empty bool
}

// createToken handles POST /api/tokens: a fresh login, or a re-auth when a
// still-valid token is posted.
func (s *Server) createToken(r *http.Request) reply {
	req, ok := parseLogin(r)
	if !ok {
		return errInternal()
	}

	addr := remoteHost(r)
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()

	// The ban extension looks at every non-empty attempt before any
	// authentication happens, so a banned address cannot even re-auth.
	if !req.empty && s.bannedLocked(addr, now) {
		s.stats.Banned++
		return errBanned()
	}

	if sess, ok := s.lookupLocked(req.token, now, true); ok {
		s.stats.Reauths++
		return s.authReply(req.token, sess.username)
	}

	if name, ok := s.checkPasswordLocked(req); ok {
		tok := newToken()
		s.sessions[tok] = &session{username: name, lastAccess: now}
		s.stats.Logins++
		return s.authReply(tok, name)
	}

	if req.empty {
		return errBadLogin()
	}
	s.stats.FailedLogins++
	if s.recordFailureLocked(addr, now) {
		// The extension checks the ban again while recording the failure,
		// so the attempt that reaches the limit is itself answered 429.
		s.stats.Banned++
		return errBanned()
	}
	return errBadLogin()
}

// parseLogin reads the login form. It reports false where Guacamole fails
// with an internal error: a body that is not form-encoded (a missing
// Content-Type included) or a malformed Basic Authorization header.
func parseLogin(r *http.Request) (loginRequest, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return loginRequest{}, false
	}
	if err := r.ParseForm(); err != nil {
		return loginRequest{}, false
	}

	var req loginRequest
	if vals, ok := r.PostForm["username"]; ok {
		req.username = &vals[0]
	}
	if vals, ok := r.PostForm["password"]; ok {
		req.password = &vals[0]
	}
	req.token = r.PostForm.Get("token")

	if req.username == nil && req.password == nil {
		user, pass, ok := basicCredentials(r.Header.Get("Authorization"))
		if !ok {
			return loginRequest{}, false
		}
		req.username, req.password = user, pass
	}

	req.empty = req.username == nil && req.password == nil && len(r.Form) == 0
	return req, true
}

// basicCredentials decodes an HTTP Basic header as Guacamole does: the
// scheme is matched case-sensitively, a header without a colon yields no
// credentials, and undecodable base64 is an error (ok is false).
func basicCredentials(header string) (user, pass *string, ok bool) {
	encoded, found := strings.CutPrefix(header, "Basic ")
	if !found {
		return nil, nil, true
	}
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, nil, false
	}
	u, p, found := strings.Cut(string(raw), ":")
	if !found {
		return nil, nil, true
	}
	return &u, &p, true
}

// checkPasswordLocked returns the username if req names a known user with
// the right password. The caller must hold s.mu.
func (s *Server) checkPasswordLocked(req loginRequest) (string, bool) {
	if req.username == nil || req.password == nil {
		return "", false
	}
	u, ok := s.users[*req.username]
	if !ok || u.Password != *req.password {
		return "", false
	}
	return *req.username, true
}

func (s *Server) authReply(tok, username string) reply {
	return jsonReply(http.StatusOK, authResult{
		AuthToken:            tok,
		Username:             username,
		DataSource:           s.opts.DataSource,
		AvailableDataSources: []string{s.opts.DataSource},
	})
}

// bannedLocked reports whether logins from addr are refused at now, and
// forgets the address once its failures are old enough not to matter. The
// caller must hold s.mu.
func (s *Server) bannedLocked(addr string, now time.Time) bool {
	rec, ok := s.failures[addr]
	if !ok {
		return false
	}
	if s.blocks(rec, now) {
		return true
	}
	if now.Sub(rec.last) > s.opts.BanWindow {
		delete(s.failures, addr)
	}
	return false
}

// recordFailureLocked counts a failed login from addr and reports whether
// the address is now banned. The caller must hold s.mu.
func (s *Server) recordFailureLocked(addr string, now time.Time) bool {
	rec, ok := s.failures[addr]
	if !ok || now.Sub(rec.last) > s.opts.BanWindow {
		rec = &failureRecord{}
		s.failures[addr] = rec
	}
	rec.count++
	rec.last = now
	return s.blocks(rec, now)
}

// blocks reports whether rec bans its address at now. Like the extension,
// the ban still holds at exactly BanDuration after the last failure.
func (s *Server) blocks(rec *failureRecord, now time.Time) bool {
	return !s.opts.DisableBan &&
		rec.count >= s.opts.BanMaxFailures &&
		now.Sub(rec.last) <= s.opts.BanDuration
}

// deleteToken handles DELETE /api/tokens/{token}, which needs no other
// authentication.
func (s *Server) deleteToken(tok string) reply {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.lookupLocked(tok, now, false); !ok {
		return errNoSuchToken()
	}
	s.endSessionLocked(tok, now)
	s.stats.Revocations++
	return noContent()
}

// sessionRoot handles {base}/api/session itself: HEAD checks the token
// without resetting its idle timer, DELETE revokes it.
func (s *Server) sessionRoot(r *http.Request) reply {
	tok := requestToken(r)
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()

	touch := r.Method != http.MethodHead
	if _, ok := s.lookupLocked(tok, now, touch); !ok {
		return errInvalidToken()
	}
	switch r.Method {
	case http.MethodHead:
		return noContent()
	case http.MethodDelete:
		s.endSessionLocked(tok, now)
		s.stats.Revocations++
		return noContent()
	}
	return methodNotAllowed("DELETE, HEAD")
}

// newToken returns 32 random bytes as 64 upper-case hex digits, the format
// of Guacamole's tokens.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b) // crypto/rand.Read never returns an error
	return strings.ToUpper(hex.EncodeToString(b))
}
