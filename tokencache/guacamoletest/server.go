package guacamoletest

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// User is an account the emulator accepts.
type User struct {
	Password string
	// Admin users may list /users; others get a real permission denial there
	// (403 PERMISSION_DENIED "Permission denied.", lower-case d, token stays
	// valid).
	Admin bool
}

// Options configures a Server. The zero value is usable: it serves under
// /guacamole with the data source "default", no users, a 60-minute idle
// timeout and the ban extension's defaults.
type Options struct {
	// BasePath is the web application's context path. If empty,
	// "/guacamole" is used; "/" serves at the root.
	BasePath string
	// DataSource names the single authentication provider; logins report it
	// as dataSource and as the only entry of availableDataSources. If empty,
	// "default" is used, as for user-mapping.xml.
	DataSource string
	// Users are the accounts that may log in, by username. The map is
	// copied; use Server.SetUser to change accounts later.
	Users map[string]User
	// SessionTimeout is how long a session may stay idle (Guacamole's
	// api-session-timeout). If zero, 60 minutes is used.
	SessionTimeout time.Duration
	// Clock supplies the current time for idle expiry and bans. If nil,
	// time.Now is used; tests inject a fake clock.
	Clock func() time.Time
	// BanMaxFailures is how many failed logins from one address trigger a
	// ban. If zero, 5 is used.
	BanMaxFailures int
	// BanWindow is how long after its latest failure an address's failure
	// count is kept. If zero, 300 seconds is used.
	BanWindow time.Duration
	// BanDuration is how long a ban lasts, counted from the address's latest
	// failure. If zero, 300 seconds is used.
	BanDuration time.Duration
	// DisableBan turns the ban off, as when the ban extension is absent.
	// Failed logins are still counted in Stats.
	DisableBan bool
	// Observe, if non-nil, is called synchronously, before handling, with
	// every request that reaches the emulator, so tests can see exactly what
	// arrived (headers, query). It must not consume the body.
	Observe func(r *http.Request)
}

// Stats counts what a Server has done since it was created. Restart does not
// reset it.
type Stats struct {
	Logins       int // successful logins that created a new session
	Reauths      int // successful re-auth POSTs with a valid token=
	FailedLogins int // login attempts that failed (counted toward the ban)
	Banned       int // login attempts answered 429
	Revocations  int // sessions ended by DELETE /api/tokens/{t} or DELETE /api/session
	LiveSessions int // sessions not yet expired, by Clock
	Requests     int // every request served
	OpenTunnels  int // tunnels open now, WebSocket and HTTP alike
	// TunnelsOpened counts the tunnels ever opened; refused ones are not.
	TunnelsOpened int
}

// Server is an emulated Guacamole web application. It implements
// http.Handler; NewServer also serves it on a loopback port. All methods are
// safe for concurrent use.
type Server struct {
	// URL is the base URL including BasePath, e.g.
	// "http://127.0.0.1:41234/guacamole". It is empty for a Server made by
	// New, which does not listen.
	URL string

	opts Options
	base string // BasePath without a trailing slash; "" for the root

	mu          sync.Mutex
	users       map[string]User
	sessions    map[string]*session
	failures    map[string]*failureRecord
	connections map[string]*connection
	nextConnID  int
	stats       Stats
	tunnels     map[string]*tunnel // open tunnels by UUID
	httpTunnels map[string]*tunnel // open HTTP tunnels by tunnel token
	tunnelSeq   uint64
	closed      bool           // Close has begun: no new tunnel handlers
	handlers    sync.WaitGroup // running tunnel handlers, for Close

	httpServer *http.Server
	closeOnce  sync.Once
}

// session is one logged-in token.
type session struct {
	username   string
	lastAccess time.Time
	tunnels    map[string]*tunnel // open tunnels by UUID; nil if none yet
}

// New returns a Server that is not listening; use it as an http.Handler.
func New(opts Options) *Server {
	if opts.BasePath == "" {
		opts.BasePath = "/guacamole"
	}
	if opts.DataSource == "" {
		opts.DataSource = "default"
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = 60 * time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.BanMaxFailures <= 0 {
		opts.BanMaxFailures = 5
	}
	if opts.BanWindow <= 0 {
		opts.BanWindow = 300 * time.Second
	}
	if opts.BanDuration <= 0 {
		opts.BanDuration = 300 * time.Second
	}

	base := "/" + strings.Trim(opts.BasePath, "/")
	if base == "/" {
		base = ""
	}
	opts.BasePath = base

	users := make(map[string]User, len(opts.Users))
	for name, u := range opts.Users {
		users[name] = u
	}
	opts.Users = nil

	s := &Server{
		opts:     opts,
		base:     base,
		users:    users,
		sessions: make(map[string]*session),
		failures: make(map[string]*failureRecord),

		tunnels:     make(map[string]*tunnel),
		httpTunnels: make(map[string]*tunnel),
	}
	s.connections, s.nextConnID = sampleConnections()
	return s
}

// NewServer returns a Server listening on a random port of 127.0.0.1 and
// serving in the background. Like httptest.NewServer, it panics if it cannot
// listen. Call Close when done.
func NewServer(opts Options) *Server {
	s := New(opts)
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		panic("guacamoletest: listen on 127.0.0.1: " + err.Error())
	}

	s.URL = "http://" + ln.Addr().String() + s.base
	s.httpServer = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = s.httpServer.Serve(ln) }() // ends with ErrServerClosed on Close
	return s
}

// Close stops listening, closes every open connection and every open
// tunnel, and waits until the tunnels' handlers have returned. Tunnel
// requests that arrive later are refused with 503. It is safe to call more
// than once; for a Server made by New it only closes the tunnels.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.httpServer != nil {
			_ = s.httpServer.Close()
		}
		now := s.opts.Clock()
		s.mu.Lock()
		s.closed = true
		s.closeAllTunnelsLocked(now, true)
		s.mu.Unlock()
		s.handlers.Wait()
	})
}

// Restart loses every session and all ban state, as restarting the web
// application does, and closes every tunnel: WebSocket tunnels with close
// code 1001 (going away), HTTP tunnels by ending their reads. Users, created
// connections and Stats are kept, since they live outside the web
// application in a real deployment.
func (s *Server) Restart() {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeAllTunnelsLocked(now, false)
	s.sessions = make(map[string]*session)
	s.failures = make(map[string]*failureRecord)
}

// SetUser adds the named user or replaces it, for example to rotate its
// password. Sessions already open for the user stay valid, as in Guacamole.
func (s *Server) SetUser(name string, u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[name] = u
}

// ExpireIdle drops every session that has been idle for SessionTimeout or
// longer by Clock, which is what Guacamole's once-a-minute sweep does. A
// session with an open tunnel is never dropped.
func (s *Server) ExpireIdle() {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepTunnelsLocked(now)
	for tok, sess := range s.sessions {
		if s.expired(sess, now) {
			delete(s.sessions, tok)
		}
	}
}

// LiveTokens returns the tokens of all sessions that have not expired by
// Clock, sorted. Looking does not reset any idle timer.
func (s *Server) LiveTokens() []string {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepTunnelsLocked(now)
	tokens := make([]string, 0, len(s.sessions))
	for tok, sess := range s.sessions {
		if !s.expired(sess, now) {
			tokens = append(tokens, tok)
		}
	}
	slices.Sort(tokens)
	return tokens
}

// Stats returns a consistent snapshot of the server's counters.
func (s *Server) Stats() Stats {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepTunnelsLocked(now)
	st := s.stats
	for _, sess := range s.sessions {
		if !s.expired(sess, now) {
			st.LiveSessions++
		}
	}
	st.OpenTunnels = len(s.tunnels)
	return st
}

// ServeHTTP serves one request the way Guacamole would.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.Observe != nil {
		s.opts.Observe(r)
	}
	s.mu.Lock()
	s.stats.Requests++
	s.mu.Unlock()

	if rel, ok := s.relPath(r.URL.Path); ok {
		switch rel {
		case "/websocket-tunnel":
			s.serveWebSocketTunnel(w, r)
			return
		case "/tunnel":
			s.serveHTTPTunnel(w, r)
			return
		}
	}
	s.route(r).write(w, r)
}

// route picks the handler for r from its path inside the base path.
func (s *Server) route(r *http.Request) reply {
	rel, ok := s.relPath(r.URL.Path)
	if !ok {
		return notFound()
	}

	switch {
	case rel == "" || rel == "/":
		return s.home(r)
	case rel == "/api/tokens":
		if r.Method != http.MethodPost {
			return methodNotAllowed(http.MethodPost)
		}
		return s.createToken(r)
	case strings.HasPrefix(rel, "/api/tokens/"):
		tok := strings.TrimPrefix(rel, "/api/tokens/")
		if tok == "" || strings.Contains(tok, "/") {
			return notFound()
		}
		if r.Method != http.MethodDelete {
			return methodNotAllowed(http.MethodDelete)
		}
		return s.deleteToken(tok)
	case rel == "/api/session" || rel == "/api/session/":
		return s.sessionRoot(r)
	case strings.HasPrefix(rel, "/api/session/"):
		return s.sessionResource(r, strings.TrimPrefix(rel, "/api/session/"))
	}
	return notFound()
}

// relPath returns p relative to the base path, and whether p lies under it.
func (s *Server) relPath(p string) (string, bool) {
	if s.base == "" {
		return p, true
	}
	if p == s.base {
		return "", true
	}
	if strings.HasPrefix(p, s.base+"/") {
		return p[len(s.base):], true
	}
	return "", false
}

// home stands in for the web application's landing page, so that a plain
// GET of the base URL succeeds as it does against Guacamole.
func (s *Server) home(r *http.Request) reply {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return methodNotAllowed("GET, HEAD")
	}
	return reply{
		status:      http.StatusOK,
		contentType: "text/html; charset=utf-8",
		body:        []byte("<!DOCTYPE html>\n<title>Guacamole emulator</title>\n"),
	}
}

// expired reports whether sess has been idle for the session timeout or
// longer at now. Guacamole's sweep uses the same inclusive comparison, and
// never expires a session with an open tunnel.
func (s *Server) expired(sess *session, now time.Time) bool {
	return len(sess.tunnels) == 0 && now.Sub(sess.lastAccess) >= s.opts.SessionTimeout
}

// lookupLocked returns the live session for tok, dropping it first if it
// has expired. If touch is set, the idle timer is reset. The caller must
// hold s.mu.
func (s *Server) lookupLocked(tok string, now time.Time, touch bool) (*session, bool) {
	if tok == "" {
		return nil, false
	}
	s.sweepTunnelsLocked(now)
	sess, ok := s.sessions[tok]
	if !ok {
		return nil, false
	}
	if s.expired(sess, now) {
		delete(s.sessions, tok)
		return nil, false
	}
	if touch {
		sess.lastAccess = now
	}
	return sess, true
}

// requestToken returns the token a REST call carries: the Guacamole-Token
// header if present and non-empty, otherwise the first token query
// parameter.
func requestToken(r *http.Request) string {
	if tok := r.Header.Get("Guacamole-Token"); tok != "" {
		return tok
	}
	if vals := r.URL.Query()["token"]; len(vals) > 0 {
		return vals[0]
	}
	return ""
}

// remoteHost returns the address the ban extension tracks: the host part of
// RemoteAddr, or all of it if it has no port.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

var _ http.Handler = (*Server)(nil)
