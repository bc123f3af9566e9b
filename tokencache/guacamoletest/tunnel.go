package guacamoletest

import (
	"cmp"
	"crypto/rand"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

const (
	// tunnelKeepAlive is how long a tunnel may stay silent before the
	// emulated remote desktop ends a frame with a sync instruction, as guacd
	// sends something at least this often.
	tunnelKeepAlive = 5 * time.Second
	// httpTunnelTimeout is how long an HTTP tunnel may go without a read or
	// write before Guacamole closes it.
	httpTunnelTimeout = 15 * time.Second
	// defaultWidth and defaultHeight size the remote display when the
	// tunnel request does not name a size.
	defaultWidth  = 1024
	defaultHeight = 768
)

// TunnelInfo describes a tunnel that is open.
type TunnelInfo struct {
	// UUID identifies the tunnel, as Guacamole reports it to the client.
	UUID string
	// Token is the auth token the tunnel was opened with.
	Token string
	// HTTP reports whether this is an HTTP tunnel rather than a WebSocket
	// tunnel.
	HTTP bool
	// DataSource, Type and ID are the GUAC_DATA_SOURCE, GUAC_TYPE and
	// GUAC_ID the tunnel was opened with.
	DataSource string
	Type       string
	ID         string
	// Params holds every parameter of the request that opened the tunnel
	// except token: the query of a WebSocket tunnel, the form body of an
	// HTTP tunnel.
	Params url.Values
}

// tunnelStatus is a Guacamole status as the tunnels report it: an HTTP
// status for the HTTP tunnel, a WebSocket close code, and the Guacamole
// protocol code sent as the close reason or the Guacamole-Status-Code
// header.
type tunnelStatus struct {
	http, ws, guac int
}

// The statuses the emulated tunnels use, with Guacamole's codes.
var (
	statusSuccess      = tunnelStatus{http: 200, ws: 1000, guac: 0x0000}
	statusNotFound     = tunnelStatus{http: 404, ws: 1002, guac: 0x0204}
	statusBadRequest   = tunnelStatus{http: 400, ws: 1002, guac: 0x0300}
	statusUnauthorized = tunnelStatus{http: 403, ws: 1008, guac: 0x0301}
	statusForbidden    = tunnelStatus{http: 403, ws: 1008, guac: 0x0303}
)

// tunnelError is a failed tunnel operation: the status and the message
// Guacamole attaches to it.
type tunnelError struct {
	status tunnelStatus
	msg    string
}

// tunnelRequest is what a tunnel connect request asks for, parsed in
// Guacamole's order.
type tunnelRequest struct {
	token      string
	id         string
	typ        string
	dataSource string
	width      int
	height     int
	params     url.Values // all parameters but token
}

// parseTunnelRequest reads the connect parameters. Like Guacamole, it
// checks them in a fixed order before it looks at the token, so a request
// missing GUAC_ID is a bad request whatever its token. The first value of
// a repeated parameter wins.
func parseTunnelRequest(params url.Values) (tunnelRequest, *tunnelError) {
	req := tunnelRequest{token: params.Get("token")}
	var ok bool
	if req.id, ok = requiredParam(params, "GUAC_ID"); !ok {
		return req, missingParam("GUAC_ID")
	}
	if req.typ, ok = requiredParam(params, "GUAC_TYPE"); !ok {
		return req, missingParam("GUAC_TYPE")
	}
	if req.typ != "c" && req.typ != "g" && req.typ != "a" {
		return req, &tunnelError{statusBadRequest, "Illegal identifier - unknown type."}
	}
	if req.dataSource, ok = requiredParam(params, "GUAC_DATA_SOURCE"); !ok {
		return req, missingParam("GUAC_DATA_SOURCE")
	}

	sizes := []struct {
		name string
		dst  *int
	}{{"GUAC_WIDTH", &req.width}, {"GUAC_HEIGHT", &req.height}, {"GUAC_DPI", nil}}
	for _, p := range sizes {
		v, present := requiredParam(params, p.name)
		if !present {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return req, &tunnelError{statusBadRequest,
				`Parameter "` + p.name + `" must be a valid integer.`}
		}
		if p.dst != nil {
			*p.dst = int(n)
		}
	}

	req.params = make(url.Values, len(params))
	for k, v := range params {
		if k != "token" {
			req.params[k] = slices.Clone(v)
		}
	}
	return req, nil
}

// requiredParam returns the first value of the named parameter and whether
// it was present at all.
func requiredParam(params url.Values, name string) (string, bool) {
	vals, ok := params[name]
	if !ok || len(vals) == 0 {
		return "", false
	}
	return vals[0], true
}

func missingParam(name string) *tunnelError {
	return &tunnelError{statusBadRequest, `Parameter "` + name + `" is required.`}
}

// tunnel is one open tunnel and the emulated remote desktop behind it.
// Fields above mu are fixed at creation or guarded by Server.mu; the rest
// by mu.
type tunnel struct {
	info      TunnelInfo
	seq       uint64
	httpToken string    // Guacamole-Tunnel-Token of an HTTP tunnel
	accessed  time.Time // start of the latest HTTP read or write, by Clock

	wake    chan struct{} // signalled when output or a waiting reader arrives
	done    chan struct{} // closed when the tunnel closes
	readers chan struct{} // held by the one HTTP read allowed at a time
	queued  atomic.Int32  // HTTP reads waiting for their turn

	mu       sync.Mutex
	out      strings.Builder // instructions not yet sent to the client
	closed   bool
	closeWS  int    // WebSocket close code
	closeMsg string // WebSocket close reason
	hard     bool   // drop the connection right after the close frame
}

func newTunnel(info TunnelInfo) *tunnel {
	return &tunnel{
		info:    info,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		readers: make(chan struct{}, 1),
	}
}

// send queues instructions for the client. Output queued after the tunnel
// closed is dropped.
func (t *tunnel) send(instructions ...string) {
	t.mu.Lock()
	if !t.closed {
		for _, in := range instructions {
			t.out.WriteString(in)
		}
	}
	t.mu.Unlock()
	t.signal()
}

// signal wakes whoever waits on t.wake, without blocking.
func (t *tunnel) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// take returns and clears the queued output.
func (t *tunnel) take() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.out.String()
	t.out.Reset()
	return s
}

// shutdown marks t closed with the given WebSocket close code and reason.
// Output already queued is still delivered. It reports whether t was open.
func (t *tunnel) shutdown(wsCode int, reason string, hard bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.closed = true
	t.closeWS, t.closeMsg, t.hard = wsCode, reason, hard
	close(t.done)
	return true
}

// closeFrame returns how a closed WebSocket tunnel ends.
func (t *tunnel) closeFrame() (code int, reason string, hard bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closeWS, t.closeMsg, t.hard
}

// openTunnel checks req against the session it names and, if allowed,
// registers a new tunnel with the emulated remote desktop's first output
// queued. Opening resets the session's idle timer, as every use of a valid
// token does, even when the destination is refused.
func (s *Server) openTunnel(req tunnelRequest, http bool) (*tunnel, *tunnelError) {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()

	sess, ok := s.lookupLocked(req.token, now, true)
	if !ok {
		return nil, &tunnelError{statusUnauthorized, "Permission Denied."}
	}
	if req.dataSource != s.opts.DataSource {
		return nil, &tunnelError{statusNotFound,
			`Session not associated with authentication provider "` + req.dataSource + `".`}
	}
	if terr := s.destinationLocked(req); terr != nil {
		return nil, terr
	}

	s.tunnelSeq++
	t := newTunnel(TunnelInfo{
		UUID:       newUUID(),
		Token:      req.token,
		HTTP:       http,
		DataSource: req.dataSource,
		Type:       req.typ,
		ID:         req.id,
		Params:     req.params,
	})
	t.seq = s.tunnelSeq
	if http {
		t.httpToken = newToken()
		t.accessed = now
		s.httpTunnels[t.httpToken] = t
	} else {
		// The WebSocket tunnel tells the client its UUID in-band.
		t.send(instruction("", t.info.UUID))
	}
	if sess.tunnels == nil {
		sess.tunnels = make(map[string]*tunnel)
	}
	sess.tunnels[t.info.UUID] = t
	s.tunnels[t.info.UUID] = t
	s.stats.TunnelsOpened++

	width, height := req.width, req.height
	if width <= 0 || height <= 0 {
		width, height = defaultWidth, defaultHeight
	}
	t.send(instruction("size", "0", strconv.Itoa(width), strconv.Itoa(height)),
		s.syncInstruction(now))
	return t, nil
}

// destinationLocked checks that the connection, group or active connection
// req names may be connected to. The caller must hold s.mu.
func (s *Server) destinationLocked(req tunnelRequest) *tunnelError {
	switch {
	case req.typ == "c" && s.connections[req.id] != nil:
		return nil
	case req.typ == "g" && req.id == "ROOT":
		// The only group is ROOT, which is organizational: it holds
		// connections but cannot itself be connected to.
		return &tunnelError{statusForbidden, "Permission denied."}
	}
	// Active connections cannot be joined: as with user-mapping.xml, the
	// active connection directory is always empty.
	return &tunnelError{statusNotFound, "Requested tunnel destination does not exist."}
}

// closeTunnel closes t, if still open, as the client or the remote desktop
// ending it does, and resets the idle timer of its session.
func (s *Server) closeTunnel(t *tunnel) {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeTunnelLocked(t, now, statusSuccess.ws, strconv.Itoa(statusSuccess.guac), false)
}

// closeTunnelLocked deregisters t and closes it with the given WebSocket
// close code and reason. Closing a tunnel counts as a use of its session at
// the time at. The caller must hold s.mu.
func (s *Server) closeTunnelLocked(t *tunnel, at time.Time, wsCode int, reason string, hard bool) {
	if !t.shutdown(wsCode, reason, hard) {
		return
	}
	delete(s.tunnels, t.info.UUID)
	if t.httpToken != "" {
		delete(s.httpTunnels, t.httpToken)
	}
	if sess, ok := s.sessions[t.info.Token]; ok {
		delete(sess.tunnels, t.info.UUID)
		if at.After(sess.lastAccess) {
			sess.lastAccess = at
		}
	}
}

// endSessionLocked removes the session of tok, closing every tunnel opened
// with it, as revoking a token does. The caller must hold s.mu.
func (s *Server) endSessionLocked(tok string, now time.Time) {
	if sess, ok := s.sessions[tok]; ok {
		for _, t := range sess.tunnels {
			s.closeTunnelLocked(t, now, statusSuccess.ws, strconv.Itoa(statusSuccess.guac), false)
		}
	}
	delete(s.sessions, tok)
}

// closeAllTunnelsLocked closes every tunnel the way stopping the web
// application does. The caller must hold s.mu.
func (s *Server) closeAllTunnelsLocked(now time.Time, hard bool) {
	for _, t := range s.tunnels {
		s.closeTunnelLocked(t, now, 1001, "", hard) // 1001: going away
	}
}

// sweepTunnelsLocked closes HTTP tunnels that have gone without a read or
// write for httpTunnelTimeout, as Guacamole's tunnel map does. The caller
// must hold s.mu.
func (s *Server) sweepTunnelsLocked(now time.Time) {
	for _, t := range s.httpTunnels {
		if now.Sub(t.accessed) >= httpTunnelTimeout {
			s.closeTunnelLocked(t, t.accessed.Add(httpTunnelTimeout),
				statusSuccess.ws, strconv.Itoa(statusSuccess.guac), false)
		}
	}
}

// enterTunnelLocked registers a tunnel handler with Close, and reports
// false once the server is closed. The caller must hold s.mu.
func (s *Server) enterTunnelLocked() bool {
	if s.closed {
		return false
	}
	s.handlers.Add(1)
	return true
}

// Tunnels returns the tunnels that are open, in the order they were
// opened.
func (s *Server) Tunnels() []TunnelInfo {
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepTunnelsLocked(now)

	open := make([]*tunnel, 0, len(s.tunnels))
	for _, t := range s.tunnels {
		open = append(open, t)
	}
	slices.SortFunc(open, func(a, b *tunnel) int { return cmp.Compare(a.seq, b.seq) })
	infos := make([]TunnelInfo, len(open))
	for i, t := range open {
		infos[i] = t.info
		infos[i].Params = cloneValues(t.info.Params)
	}
	return infos
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vals := range v {
		c[k] = slices.Clone(vals)
	}
	return c
}

// input handles instructions the client sent through t, as guacd and the
// web application would:
//
//   - the WebSocket tunnel's internal ping ("" opcode, "ping", timestamp)
//     is answered with the same instruction;
//   - size W,H resizes the remote display: the answer is size 0,W,H and a
//     sync;
//   - disconnect is answered with disconnect, and then the tunnel closes;
//   - anything else (sync, nop, key, mouse, …) is accepted silently.
//
// Data that is not a sequence of well-formed instructions is dropped.
func (s *Server) input(t *tunnel, data string) {
	instructions, ok := parseInstructions(data)
	if !ok {
		return
	}
	for _, in := range instructions {
		switch op, args := in[0], in[1:]; op {
		case "":
			if !t.info.HTTP && len(args) >= 2 && args[0] == "ping" {
				t.send(instruction("", "ping", args[1]))
			}
		case "size":
			if len(args) < 2 || !isInt(args[0]) || !isInt(args[1]) {
				continue
			}
			t.send(instruction("size", "0", args[0], args[1]),
				s.syncInstruction(s.opts.Clock()))
		case "disconnect":
			t.send(instruction("disconnect"))
			s.closeTunnel(t)
			return
		}
	}
}

// syncInstruction ends a frame at now, in milliseconds as guacd counts.
func (s *Server) syncInstruction(now time.Time) string {
	return instruction("sync", strconv.FormatInt(now.UnixMilli(), 10))
}

func isInt(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// instruction encodes one Guacamole protocol instruction: each element as
// its length in Unicode code points, a dot and the element, separated by
// commas and ended by a semicolon.
func instruction(elements ...string) string {
	var b strings.Builder
	for i, e := range elements {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(utf8.RuneCountInString(e)))
		b.WriteByte('.')
		b.WriteString(e)
	}
	b.WriteByte(';')
	return b.String()
}

// parseInstructions splits data into instructions, each a slice holding
// the opcode and then the arguments. It reports false unless data is a
// sequence of complete, well-formed instructions.
func parseInstructions(data string) ([][]string, bool) {
	var (
		all     [][]string
		current []string
	)
	for len(data) > 0 {
		dot := strings.IndexByte(data, '.')
		if dot <= 0 {
			return nil, false
		}
		n, err := strconv.Atoi(data[:dot])
		if err != nil || n < 0 {
			return nil, false
		}
		data = data[dot+1:]

		// Walk n code points to find where the element ends.
		end := 0
		for range n {
			if end >= len(data) {
				return nil, false
			}
			r, size := utf8.DecodeRuneInString(data[end:])
			if r == utf8.RuneError && size <= 1 {
				return nil, false
			}
			end += size
		}
		if end >= len(data) {
			return nil, false
		}
		current = append(current, data[:end])
		switch data[end] {
		case ',':
		case ';':
			all = append(all, current)
			current = nil
		default:
			return nil, false
		}
		data = data[end+1:]
	}
	return all, current == nil
}

// newUUID returns a random (version 4) UUID in its usual lower-case form,
// as Java's UUID.randomUUID writes it.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:]) // crypto/rand.Read never returns an error
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&0x0f])
	}
	return string(out)
}
