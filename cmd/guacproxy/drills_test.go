package main

// Reliability drills. Each one runs a whole guacproxy (newServer and run, on
// loopback ports) in front of the Guacamole emulator, breaks something the
// way production breaks it, and checks what the callers and Guacamole saw.
// Every drill logs its numbers on one "drill:" line. Deadlines in this file
// only keep a broken drill from hanging; no timing is asserted.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/config"
	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

const (
	// selfPath is the idempotent read the drills' clients repeat.
	selfPath = "/api/session/data/default/self"
	// heldPath is held at the upstream until the drill releases it.
	heldPath = "/api/session/data/default/connections"
	// drillBound bounds every wait in this file.
	drillBound = 20 * time.Second
	// goroutineSlack is how many goroutines more than at the baseline still
	// count as no growth: the runtime and the test framework start a few of
	// their own.
	goroutineSlack = 3
)

// drillUpstream is the emulator behind an httptest server whose handler a
// drill can slow down, hold or watch.
type drillUpstream struct {
	emu *guacamoletest.Server
	ts  *httptest.Server
	url string // Guacamole's base URL, with its context path

	// delay, if positive, postpones every answer by that many nanoseconds,
	// or until the caller gives up.
	delay atomic.Int64
	// held receives a value for every GET of heldPath, which then waits
	// until release is closed or its caller gives up.
	held        chan struct{}
	release     chan struct{}
	releaseOnce sync.Once
	// abandoned counts delayed or held requests whose caller gave up.
	abandoned atomic.Int64
	// loginHook, if set, runs before the emulator answers a login.
	loginHook atomic.Pointer[func()]
	// checks counts token checks (HEAD /api/session).
	checks atomic.Int64

	loginsNow, loginsPeak atomic.Int64

	mu     sync.Mutex
	logins map[string]int // login attempts by username
}

func newDrillUpstream(t *testing.T, users map[string]guacamoletest.User) *drillUpstream {
	t.Helper()
	u := &drillUpstream{
		emu:     guacamoletest.New(guacamoletest.Options{Users: users}),
		held:    make(chan struct{}, 64),
		release: make(chan struct{}),
		logins:  make(map[string]int),
	}
	u.ts = httptest.NewServer(http.HandlerFunc(u.serve))
	u.url = u.ts.URL + "/guacamole"
	// Cleanups run last to first: guacproxy stops before the emulator.
	t.Cleanup(u.ts.Close)
	t.Cleanup(u.emu.Close)
	t.Cleanup(u.releaseHeld)
	return u
}

func (u *drillUpstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/api/tokens") {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		u.mu.Lock()
		u.logins[form.Get("username")]++
		u.mu.Unlock()

		n := u.loginsNow.Add(1)
		defer u.loginsNow.Add(-1)
		for peak := u.loginsPeak.Load(); n > peak && !u.loginsPeak.CompareAndSwap(peak, n); {
			peak = u.loginsPeak.Load()
		}
		if hook := u.loginHook.Load(); hook != nil {
			(*hook)()
		}
	}
	if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/api/session") {
		u.checks.Add(1)
	}
	if d := time.Duration(u.delay.Load()); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			u.abandoned.Add(1)
			return
		}
	}
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, heldPath) {
		select {
		case u.held <- struct{}{}:
		case <-r.Context().Done():
			u.abandoned.Add(1)
			return
		}
		select {
		case <-u.release:
		case <-r.Context().Done():
			u.abandoned.Add(1)
			return
		}
	}
	u.emu.ServeHTTP(w, r)
}

func (u *drillUpstream) releaseHeld() { u.releaseOnce.Do(func() { close(u.release) }) }

// awaitHeld waits until n requests are held.
func (u *drillUpstream) awaitHeld(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(drillBound)
	for range n {
		select {
		case <-u.held:
		case <-deadline:
			t.Fatalf("fewer than %d requests reached Guacamole", n)
		}
	}
}

// loginAttempts returns the login attempts Guacamole received, by username.
func (u *drillUpstream) loginAttempts() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return maps.Clone(u.logins)
}

// dropIdle closes guacproxy's idle connections to Guacamole from Guacamole's
// side, so that goroutine counts compare like with like.
func (u *drillUpstream) dropIdle() { u.ts.CloseClientConnections() }

// drillIdentities returns n identities selected by API key, and the
// Guacamole accounts they log in as.
func drillIdentities(prefix string, n int) ([]config.Identity, map[string]guacamoletest.User) {
	ids := make([]config.Identity, n)
	users := make(map[string]guacamoletest.User, n)
	for i := range ids {
		name := fmt.Sprintf("%s-%d", prefix, i)
		ids[i] = config.Identity{
			Name:          name,
			Username:      "svc-" + name,
			Password:      "pw-" + name,
			APIKeysSHA256: []string{config.HashAPIKey(drillKey(name))},
		}
		users[ids[i].Username] = guacamoletest.User{Password: ids[i].Password}
	}
	return ids, users
}

func drillKey(identity string) string { return "key-" + identity }

func drillConfig(t *testing.T, guacURL string, ids []config.Identity,
	adjust func(*config.Config),
) *config.Config {
	t.Helper()
	cfg := &config.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		Guacamole:   config.Guacamole{URL: guacURL},
		Identities:  ids,
	}
	cfg.ApplyDefaults()
	if adjust != nil {
		adjust(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startDrill runs guacproxy with cfg until the drill stops it.
func startDrill(t *testing.T, cfg *config.Config) *running {
	t.Helper()
	return serve(t, newTestServer(t, cfg, zap.NewNop()))
}

// drillClient returns a client with its own connection pool, closed when the
// test ends. Its timeout only keeps a broken drill from hanging.
func drillClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: drillBound}
}

type drillReply struct {
	status int
	header http.Header
	body   []byte
}

func drillGet(ctx context.Context, c *http.Client, base, path, key string) (drillReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return drillReply{}, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return drillReply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return drillReply{status: resp.StatusCode, header: resp.Header, body: body}, err
}

// mustGet sends one request and fails the test unless it gets status.
func mustGet(t *testing.T, c *http.Client, base, path, key string, status int) drillReply {
	t.Helper()
	r, err := drillGet(context.Background(), c, base, path, key)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if r.status != status {
		t.Fatalf("GET %s = %d; want %d: %s", path, r.status, status, r.body)
	}
	return r
}

// checkGuacamoleError checks that r is an error guacproxy made in
// Guacamole's JSON shape, and that it names none of the hidden strings.
func checkGuacamoleError(t *testing.T, r drillReply, status int, typ, message string,
	hidden ...string,
) {
	t.Helper()
	if r.status != status {
		t.Errorf("status = %d; want %d: %s", r.status, status, r.body)
		return
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &fields); err != nil {
		t.Errorf("body is not JSON: %v: %s", err, r.body)
		return
	}
	keys := slices.Sorted(maps.Keys(fields))
	want := []string{"expected", "message", "patches", "statusCode", "translatableMessage", "type"}
	if !slices.Equal(keys, want) {
		t.Errorf("error fields = %v; want %v", keys, want)
	}
	var e struct {
		Message             string `json:"message"`
		Type                string `json:"type"`
		TranslatableMessage struct {
			Key       string            `json:"key"`
			Variables map[string]string `json:"variables"`
		} `json:"translatableMessage"`
	}
	_ = json.Unmarshal(r.body, &e)
	if e.Type != typ || !strings.Contains(e.Message, message) {
		t.Errorf("error = %s %q; want %s with %q", e.Type, e.Message, typ, message)
	}
	if e.TranslatableMessage.Key != "APP.TEXT_UNTRANSLATED" ||
		e.TranslatableMessage.Variables["MESSAGE"] != e.Message {
		t.Errorf("translatableMessage = %+v; want APP.TEXT_UNTRANSLATED with the message",
			e.TranslatableMessage)
	}
	for _, h := range append(hidden, "127.0.0.1", "localhost") {
		if bytes.Contains(r.body, []byte(h)) {
			t.Errorf("the error names %q: %s", h, r.body)
		}
	}
}

// quietGoroutines waits until the number of goroutines holds still for a
// moment and returns it.
func quietGoroutines() int {
	deadline := time.Now().Add(3 * time.Second)
	last, same := runtime.NumGoroutine(), 0
	for same < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if n := runtime.NumGoroutine(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	return last
}

// baseline is the goroutines of a drill at rest.
type baseline struct {
	count int
	known goleak.Option
}

func takeBaseline() baseline {
	n := quietGoroutines()
	return baseline{count: n, known: goleak.IgnoreCurrent()}
}

// checkBack waits for the goroutines to come back to b and returns their
// number. More than goroutineSlack above b once they have settled is a
// leak; it reports the goroutines that are new since b.
func (b baseline) checkBack(t *testing.T, what string) int {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	n := runtime.NumGoroutine()
	for n > b.count && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > b.count+goroutineSlack {
		t.Errorf("%s: %d goroutines; want at most %d (baseline %d)\n%v",
			what, n, b.count+goroutineSlack, b.count, goleak.Find(b.known))
	}
	return n
}

// eventually waits until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(drillBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// drillLoad is steady traffic: clients per identity, each sending the same
// idempotent GET over and over.
type drillLoad struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	sent  []atomic.Int64 // by identity
	fails []atomic.Int64

	mu       sync.Mutex
	statuses map[int]int    // failures by status; 0 for transport errors
	samples  map[int]string // the first failure of each status
}

func startLoad(c *http.Client, base string, keys []string, perIdentity int) *drillLoad {
	l := &drillLoad{
		stopc:    make(chan struct{}),
		sent:     make([]atomic.Int64, len(keys)),
		fails:    make([]atomic.Int64, len(keys)),
		statuses: make(map[int]int),
		samples:  make(map[int]string),
	}
	for i, key := range keys {
		for range perIdentity {
			l.wg.Go(func() { l.client(c, base, i, key) })
		}
	}
	return l
}

func (l *drillLoad) client(c *http.Client, base string, i int, key string) {
	for {
		select {
		case <-l.stopc:
			return
		default:
		}
		r, err := drillGet(context.Background(), c, base, selfPath, key)
		l.sent[i].Add(1)
		if err == nil && r.status == http.StatusOK {
			time.Sleep(time.Millisecond) // steady, not flat out
			continue
		}
		l.fails[i].Add(1)
		l.mu.Lock()
		l.statuses[r.status]++
		if _, ok := l.samples[r.status]; !ok {
			l.samples[r.status] = fmt.Sprintf("identity %d: %d %v %s", i, r.status, err, r.body)
		}
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

// awaitEach waits until every identity has sent n more requests than in
// from.
func (l *drillLoad) awaitEach(t *testing.T, from []int64, n int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("every identity sends %d requests", n), func() bool {
		for i := range l.sent {
			if l.sent[i].Load() < from[i]+n {
				return false
			}
		}
		return true
	})
}

func (l *drillLoad) snapshot() []int64 {
	s := make([]int64, len(l.sent))
	for i := range l.sent {
		s[i] = l.sent[i].Load()
	}
	return s
}

func (l *drillLoad) stop() {
	close(l.stopc)
	l.wg.Wait()
}

// firstFailures describes the first failure of each status.
func (l *drillLoad) firstFailures() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(slices.Sorted(maps.Values(l.samples)), "\n")
}

func (l *drillLoad) totals() (sent, failed int64) {
	for i := range l.sent {
		sent += l.sent[i].Load()
		failed += l.fails[i].Load()
	}
	return sent, failed
}

func keysOf(ids []config.Identity) []string {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = drillKey(id.Name)
	}
	return keys
}

// warm sends each identity's first request, one after another.
func warm(t *testing.T, c *http.Client, d *running, ids []config.Identity) {
	t.Helper()
	for _, id := range ids {
		mustGet(t, c, d.base(), selfPath, drillKey(id.Name), http.StatusOK)
	}
}

// newLogins returns, by username, how many login attempts after has more
// than before.
func newLogins(before, after map[string]int) map[string]int {
	d := make(map[string]int)
	for u, n := range after {
		if n > before[u] {
			d[u] = n - before[u]
		}
	}
	return d
}

// TestDrillGuacamoleRestartUnderLoad restarts Guacamole, losing every
// token, while three identities send steady traffic: no request fails, and
// each identity logs in once more.
func TestDrillGuacamoleRestartUnderLoad(t *testing.T) {
	const identities, clientsEach, perPhase = 3, 2, 60
	ids, users := drillIdentities("restart", identities)
	up := newDrillUpstream(t, users)
	d := startDrill(t, drillConfig(t, up.url, ids, nil))
	c := drillClient(t)
	warm(t, c, d, ids)

	load := startLoad(c, d.base(), keysOf(ids), clientsEach)
	load.awaitEach(t, make([]int64, identities), perPhase)
	before, mark := up.loginAttempts(), load.snapshot()
	up.emu.Restart()
	load.awaitEach(t, mark, perPhase)
	load.stop()

	sent, failed := load.totals()
	added := newLogins(before, up.loginAttempts())
	st := up.emu.Stats()
	t.Logf("drill: restart under load: %d identities x %d clients, %d requests, %d failed (%v); "+
		"logins after the restart %v; token checks %d; guacamole logins %d, failed %d",
		identities, clientsEach, sent, failed, load.statuses, added, up.checks.Load(),
		st.Logins, st.FailedLogins)
	if failed != 0 {
		t.Errorf("%d requests failed; want 0; first of each status:\n%s",
			failed, load.firstFailures())
	}
	for _, id := range ids {
		if n := added[id.Username]; n > 1 {
			t.Errorf("identity %s logged in %d times after the restart; want at most 1", id.Name, n)
		}
	}
	if st.FailedLogins != 0 || st.LiveSessions != identities {
		t.Errorf("guacamole: failed logins=%d live=%d; want 0 and %d",
			st.FailedLogins, st.LiveSessions, identities)
	}
}

// TestDrillRestartWithMoreIdentitiesThanTheLoginBudget is the restart drill
// with six busy identities, more than the failed-login budget (four by
// default), against a Guacamole that, just restarted, answers logins
// slowly: each login is held until every identity has asked, or for two
// seconds at most. No login fails, so the budget is never spent and no
// request should be refused; each identity needs one login, as in the
// restart drill above.
func TestDrillRestartWithMoreIdentitiesThanTheLoginBudget(t *testing.T) {
	const identities, perPhase = 6, 20
	ids, users := drillIdentities("budget", identities)
	up := newDrillUpstream(t, users)
	d := startDrill(t, drillConfig(t, up.url, ids, nil))
	c := drillClient(t)
	warm(t, c, d, ids)

	load := startLoad(c, d.base(), keysOf(ids), 1)
	load.awaitEach(t, make([]int64, identities), perPhase)
	var asked atomic.Int64
	together := make(chan struct{})
	var once sync.Once
	hook := func() {
		if asked.Add(1) >= identities {
			once.Do(func() { close(together) })
		}
		select {
		case <-together:
		case <-time.After(2 * time.Second):
		}
	}
	up.loginHook.Store(&hook)
	before, mark := up.loginAttempts(), load.snapshot()
	up.loginsPeak.Store(0)
	up.emu.Restart()
	load.awaitEach(t, mark, perPhase)
	load.stop()

	sent, failed := load.totals()
	added := newLogins(before, up.loginAttempts())
	st := up.emu.Stats()
	t.Logf("drill: restart with %d identities: %d requests, %d failed (by status %v); "+
		"logins after the restart %v, at most %d at once; guacamole failed logins %d",
		identities, sent, failed, load.statuses, added, up.loginsPeak.Load(), st.FailedLogins)
	if failed != 0 {
		t.Errorf("%d requests failed after a restart although no login failed; want 0; "+
			"first of each status:\n%s", failed, load.firstFailures())
	}
	for _, id := range ids {
		if n := added[id.Username]; n > 1 {
			t.Errorf("identity %s logged in %d times after the restart; want at most 1", id.Name, n)
		}
	}
}

// forwarder is a TCP relay to Guacamole that a drill can take down (its
// port refuses connections and open ones are cut) and bring back up on the
// same port.
type forwarder struct {
	addr, target string
	accepted     atomic.Int64

	mu    sync.Mutex
	ln    net.Listener
	pairs map[net.Conn]net.Conn // client side to Guacamole side
	wg    sync.WaitGroup        // accept loop and relays
}

func newForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	f := &forwarder{target: target, pairs: make(map[net.Conn]net.Conn)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.serve(ln)
	t.Cleanup(f.down)
	return f
}

func (f *forwarder) up() error {
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	f.serve(ln)
	return nil
}

func (f *forwarder) serve(ln net.Listener) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			f.wg.Add(1)
			go f.relay(c)
		}
	}()
}

func (f *forwarder) relay(c net.Conn) {
	defer f.wg.Done()
	g, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	f.mu.Lock()
	if f.ln == nil { // went down meanwhile
		f.mu.Unlock()
		_ = c.Close()
		_ = g.Close()
		return
	}
	f.pairs[c] = g
	f.mu.Unlock()

	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(g, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, g); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = g.Close()
	<-done
	f.mu.Lock()
	delete(f.pairs, c)
	f.mu.Unlock()
}

// down closes the listener and every relayed connection, and waits until
// the relays have stopped.
func (f *forwarder) down() {
	f.mu.Lock()
	ln := f.ln
	f.ln = nil
	pairs := maps.Clone(f.pairs)
	f.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for c, g := range pairs {
		_ = c.Close()
		_ = g.Close()
	}
	f.wg.Wait()
}

// open returns the number of connections being relayed.
func (f *forwarder) open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pairs)
}

// outage is how long the unreachable-Guacamole drill keeps Guacamole away:
// long enough for the background sweeps (every 15 s) to run during it.
const outage = 30 * time.Second

// TestDrillGuacamoleUnreachable takes Guacamole off the network for a while
// under traffic: every request gets a clean 502, nothing piles up in
// guacproxy, and the first request after Guacamole returns succeeds with
// the token it had.
func TestDrillGuacamoleUnreachable(t *testing.T) {
	const identities = 2
	ids, users := drillIdentities("outage", identities)
	emu := guacamoletest.NewServer(guacamoletest.Options{Users: users})
	t.Cleanup(emu.Close)
	emuAddr := strings.TrimPrefix(strings.TrimSuffix(emu.URL, "/guacamole"), "http://")
	fwd := newForwarder(t, emuAddr)
	d := startDrill(t, drillConfig(t, "http://"+fwd.addr+"/guacamole", ids,
		func(cfg *config.Config) { cfg.Guacamole.Timeout = 2 * time.Second }))
	c := drillClient(t)
	keys := keysOf(ids)
	for range 3 {
		warm(t, c, d, ids)
	}
	tokens := emu.LiveTokens()
	connsBefore, goroutinesBefore := fwd.open(), quietGoroutines()

	fwd.down()
	var requests, bad int
	var goroutinesStart, goroutinesPeak int
	start := time.Now()
	for round := 0; time.Since(start) < outage; round++ {
		for _, key := range keys {
			r, err := drillGet(context.Background(), c, d.base(), selfPath, key)
			requests++
			if err != nil {
				t.Fatalf("request during the outage: %v", err)
			}
			if r.status != http.StatusBadGateway {
				bad++
			}
			checkGuacamoleError(t, r, http.StatusBadGateway, "INTERNAL_ERROR",
				"guacproxy could not reach Guacamole.", fwd.addr, emuAddr)
		}
		if round == 0 {
			goroutinesStart = quietGoroutines()
		}
		goroutinesPeak = max(goroutinesPeak, runtime.NumGoroutine())
		time.Sleep(10 * time.Millisecond) // paces the clients; nothing is timed
		if n := fwd.open(); n != 0 {
			t.Fatalf("%d connections relayed while Guacamole is down", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	goroutinesEnd := quietGoroutines()

	if err := fwd.up(); err != nil {
		t.Fatalf("bring the forwarder back on %s: %v", fwd.addr, err)
	}
	firstAfter, err := drillGet(context.Background(), c, d.base(), selfPath, keys[0])
	if err != nil || firstAfter.status != http.StatusOK {
		t.Errorf("first request after Guacamole came back = %d, %v; want 200: %s",
			firstAfter.status, err, firstAfter.body)
	}
	warm(t, c, d, ids)
	c.Transport.(*http.Transport).CloseIdleConnections()
	connsAfter, goroutinesAfter := fwd.open(), quietGoroutines()
	st := emu.Stats()

	t.Logf("drill: guacamole unreachable for %s: %d requests, %d not 502; "+
		"goroutines %d before, %d at the outage's start, %d peak, %d at its end, %d after; "+
		"relayed connections %d before, 0 during, %d after (%d accepted in all); "+
		"guacamole logins %d, live %d",
		outage, requests, bad, goroutinesBefore, goroutinesStart, goroutinesPeak, goroutinesEnd,
		goroutinesAfter, connsBefore, connsAfter, fwd.accepted.Load(),
		st.Logins, st.LiveSessions)
	if bad != 0 {
		t.Errorf("%d of %d requests during the outage were not 502", bad, requests)
	}
	if goroutinesEnd > goroutinesStart+goroutineSlack {
		t.Errorf("goroutines grew during the outage: %d at its start, %d at its end",
			goroutinesStart, goroutinesEnd)
	}
	if goroutinesAfter > goroutinesBefore+goroutineSlack {
		t.Errorf("goroutines after the outage = %d; want at most %d (before: %d)",
			goroutinesAfter, goroutinesBefore+goroutineSlack, goroutinesBefore)
	}
	if connsAfter > max(connsBefore, identities) {
		t.Errorf("relayed connections after the outage = %d; want at most %d",
			connsAfter, max(connsBefore, identities))
	}
	if st.Logins != identities || !slices.Equal(emu.LiveTokens(), tokens) {
		t.Errorf("guacamole logins = %d, tokens changed: %t; want %d and the same tokens",
			st.Logins, !slices.Equal(emu.LiveTokens(), tokens), identities)
	}
}

// TestDrillGuacamoleSlow makes Guacamole answer later than
// guacamole.request_timeout: requests get 504, nothing is left waiting
// behind them, and once Guacamole is fast again requests succeed.
func TestDrillGuacamoleSlow(t *testing.T) {
	const identities, slowRequests = 2, 8
	ids, users := drillIdentities("slow", identities)
	up := newDrillUpstream(t, users)
	d := startDrill(t, drillConfig(t, up.url, ids,
		func(cfg *config.Config) { cfg.Guacamole.RequestTimeout = 200 * time.Millisecond }))
	c := drillClient(t)
	keys := keysOf(ids)
	warm(t, c, d, ids)
	c.Transport.(*http.Transport).CloseIdleConnections()
	up.dropIdle()
	base := takeBaseline()

	up.delay.Store(int64(time.Second))
	var wg sync.WaitGroup
	replies := make([]drillReply, slowRequests)
	errs := make([]error, slowRequests)
	for i := range slowRequests {
		wg.Go(func() {
			key := keys[i%identities]
			replies[i], errs[i] = drillGet(context.Background(), c, d.base(), selfPath, key)
		})
	}
	wg.Wait()
	var timedOut int
	for i, r := range replies {
		if errs[i] != nil {
			t.Fatalf("slow request: %v", errs[i])
		}
		if r.status == http.StatusGatewayTimeout {
			timedOut++
		}
		checkGuacamoleError(t, r, http.StatusGatewayTimeout, "INTERNAL_ERROR",
			"Guacamole did not answer in time.", up.ts.Listener.Addr().String())
	}
	eventually(t, "Guacamole sees every slow request given up",
		func() bool { return up.abandoned.Load() == slowRequests })

	up.delay.Store(0)
	var ok int
	for _, key := range keys {
		if mustGet(t, c, d.base(), selfPath, key, http.StatusOK).status == http.StatusOK {
			ok++
		}
	}
	c.Transport.(*http.Transport).CloseIdleConnections()
	up.dropIdle()
	after := base.checkBack(t, "after the slow spell")
	st := up.emu.Stats()
	t.Logf("drill: guacamole slower than request_timeout 200ms: %d requests, %d got 504, "+
		"%d abandoned at guacamole; %d succeeded after; goroutines %d at the baseline, %d after; "+
		"logins %d, revocations %d",
		slowRequests, timedOut, up.abandoned.Load(), ok, base.count, after,
		st.Logins, st.Revocations)
	if st.Logins != identities || st.Revocations != 0 {
		t.Errorf("logins=%d revocations=%d; want %d and 0: a slow answer is no reason to log in again",
			st.Logins, st.Revocations, identities)
	}
}

// TestDrillWrongPassword gives one identity a wrong password while five
// others send steady traffic: the five never notice, the broken one is told
// why and then to come back later, and Guacamole never bans guacproxy.
func TestDrillWrongPassword(t *testing.T) {
	const good, badRequests = 5, 20
	ids, users := drillIdentities("steady", good)
	bad := config.Identity{Name: "broken", Username: "svc-broken", Password: "not-the-password",
		APIKeysSHA256: []string{config.HashAPIKey(drillKey("broken"))}}
	users[bad.Username] = guacamoletest.User{Password: "the-password"}
	up := newDrillUpstream(t, users)
	d := startDrill(t, drillConfig(t, up.url, append(slices.Clone(ids), bad), nil))
	c := drillClient(t)
	warm(t, c, d, ids)

	load := startLoad(c, d.base(), keysOf(ids), 1)
	load.awaitEach(t, make([]int64, good), 20)
	statuses := make(map[int]int)
	var retryAfter string
	for i := range badRequests {
		r, err := drillGet(context.Background(), c, d.base(), selfPath, drillKey(bad.Name))
		if err != nil {
			t.Fatalf("request as %s: %v", bad.Name, err)
		}
		statuses[r.status]++
		if i == 0 {
			checkGuacamoleError(t, r, http.StatusBadGateway, "INTERNAL_ERROR",
				`identity "broken": Guacamole rejected its username or password.`, bad.Password)
			continue
		}
		checkGuacamoleError(t, r, http.StatusServiceUnavailable, "INTERNAL_ERROR",
			`identity "broken"`, bad.Password)
		ra := r.header.Get("Retry-After")
		if secs, err := strconv.Atoi(ra); err != nil || secs < 1 {
			t.Errorf("request %d: Retry-After = %q; want a positive number of seconds", i, ra)
		}
		if i == 1 {
			retryAfter = ra
		}
		time.Sleep(10 * time.Millisecond)
	}
	load.awaitEach(t, load.snapshot(), 20)
	load.stop()

	sent, failed := load.totals()
	st := up.emu.Stats()
	attempts := up.loginAttempts()[bad.Username]
	t.Logf("drill: wrong password for 1 identity beside %d busy ones: %d requests by the others, "+
		"%d failed; the broken one got %v (first Retry-After %ss); its login attempts %d; "+
		"guacamole failed logins %d, banned %d",
		good, sent, failed, statuses, retryAfter, attempts, st.FailedLogins, st.Banned)
	if failed != 0 {
		t.Errorf("%d requests of the healthy identities failed; want 0; first of each status:\n%s",
			failed, load.firstFailures())
	}
	if statuses[http.StatusBadGateway] != 1 ||
		statuses[http.StatusServiceUnavailable] != badRequests-1 {
		t.Errorf("the broken identity got %v; want one 502 then 503s", statuses)
	}
	if st.Banned != 0 || st.FailedLogins > 4 {
		t.Errorf("guacamole: banned=%d failed logins=%d; want 0 and at most 4",
			st.Banned, st.FailedLogins)
	}
}

// TestDrillShutdownWithManyTokens plays a SIGTERM while 10,000 identities
// hold a token each and a few requests are in flight: the requests finish,
// every token is revoked, and run returns within its bound.
func TestDrillShutdownWithManyTokens(t *testing.T) {
	const identities, inflight = 10_000, 5
	// The failed-login budget lets four logins be in flight at once; more
	// warmers would only wait for a place.
	const warmers = 4
	ids, users := drillIdentities("fleet", identities)
	up := newDrillUpstream(t, users)
	d := startDrill(t, drillConfig(t, up.url, ids, func(cfg *config.Config) {
		cfg.ShutdownGrace = 5 * time.Second
		cfg.Guacamole.Timeout = 10 * time.Second
	}))
	c := drillClient(t)

	warmStart := time.Now()
	var next, warmFailed atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	for range warmers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < identities; i = next.Add(1) - 1 {
				key := drillKey(ids[i].Name)
				r, err := drillGet(context.Background(), c, d.base(), selfPath, key)
				if err != nil || r.status != http.StatusOK {
					warmFailed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %v %s", r.status, err, r.body))
				}
			}
		})
	}
	wg.Wait()
	warmTook := time.Since(warmStart)
	if n := warmFailed.Load(); n != 0 {
		t.Fatalf("%d of %d warm-up requests failed; first: %v", n, identities, firstFailure.Load())
	}
	if st := up.emu.Stats(); st.LiveSessions != identities {
		t.Fatalf("live sessions after warm-up = %d; want %d", st.LiveSessions, identities)
	}

	statuses := make(chan int, inflight)
	for i := range inflight {
		go func() {
			key := drillKey(ids[i*(identities/inflight)].Name)
			r, err := drillGet(context.Background(), c, d.base(), heldPath, key)
			if err != nil {
				statuses <- 0
				return
			}
			statuses <- r.status
		}()
	}
	up.awaitHeld(t, inflight)

	bound := d.srv.cfg.ShutdownGrace + d.srv.revokeBound()
	admin := "http://" + d.srv.adminAddr() + "/readyz"
	d.stopped = true
	cancelled := time.Now()
	d.cancel()
	eventually(t, "/readyz turns 503", func() bool {
		r, err := drillGet(context.Background(), c, admin, "", "")
		return err == nil && r.status == http.StatusServiceUnavailable
	})
	if st := up.emu.Stats(); st.Revocations != 0 {
		t.Errorf("%d tokens revoked while requests were in flight; want 0", st.Revocations)
	}
	up.releaseHeld()
	var completed int
	for range inflight {
		if s := <-statuses; s == http.StatusOK {
			completed++
		} else {
			t.Errorf("in-flight request = %d; want 200", s)
		}
	}
	var runErr error
	select {
	case runErr = <-d.done:
	case <-time.After(time.Until(cancelled.Add(bound))):
		t.Fatalf("run did not return within shutdown_grace + 2 x guacamole.timeout = %s", bound)
	}
	took := time.Since(cancelled)

	st, cs := up.emu.Stats(), d.srv.cache.Stats()
	t.Logf("drill: SIGTERM with %d live tokens: warm-up %s with %d clients; %d/%d in-flight requests "+
		"completed 200; run returned %v after %s (bound %s); revoked %d, already gone %d, failed %d; "+
		"guacamole live sessions %d, revocations %d",
		identities, warmTook.Round(time.Millisecond), warmers, completed, inflight, runErr,
		took.Round(time.Millisecond), bound, cs.Revoked, cs.AlreadyGone, cs.RevokeErrors,
		st.LiveSessions, st.Revocations)
	if runErr != nil {
		t.Errorf("run: %v; want nil", runErr)
	}
	if st.LiveSessions != 0 || st.Revocations != identities {
		t.Errorf("guacamole: live sessions=%d revocations=%d; want 0 and %d",
			st.LiveSessions, st.Revocations, identities)
	}
}

// TestDrillClientsDisconnect has clients walk away: one in the middle of a
// request Guacamole is slow to answer, others in the middle of a WebSocket
// tunnel, by cutting the TCP connection without a close frame. Nothing stays
// behind in guacproxy or Guacamole, and the identity's token stays right:
// reused while it is current, revoked once a tunnel that outlived its
// retirement is gone.
func TestDrillClientsDisconnect(t *testing.T) {
	ids, users := drillIdentities("walkaway", 1)
	id, key := ids[0], drillKey(ids[0].Name)
	up := newDrillUpstream(t, users)
	d := startDrill(t, drillConfig(t, up.url, ids, nil))
	c := drillClient(t)
	warm(t, c, d, ids)
	token := up.emu.LiveTokens()
	c.Transport.(*http.Transport).CloseIdleConnections()
	up.dropIdle()
	base := takeBaseline()

	// (a) A request whose client gives up while Guacamole holds it.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := drillGet(ctx, c, d.base(), heldPath, key)
		errc <- err
	}()
	up.awaitHeld(t, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled request: %v; want context.Canceled", err)
	}
	eventually(t, "Guacamole sees the request given up",
		func() bool { return up.abandoned.Load() == 1 })
	mustGet(t, c, d.base(), selfPath, key, http.StatusOK)

	// (b) A tunnel whose client vanishes mid-stream.
	tunnelToken := dropTunnel(t, d, up, key, nil)
	if !slices.Equal(tunnelToken, token) {
		t.Errorf("the tunnel used another token than the identity's")
	}
	afterDrop := up.emu.Stats()
	mustGet(t, c, d.base(), selfPath, key, http.StatusOK)
	if st := up.emu.Stats(); st.Logins != 1 || st.Revocations != 0 ||
		!slices.Equal(up.emu.LiveTokens(), token) {
		t.Errorf("after the dropped tunnel: logins=%d revocations=%d, same token %t; want 1, 0, true",
			st.Logins, st.Revocations, slices.Equal(up.emu.LiveTokens(), token))
	}

	// (c) The same, with the tunnel's token retired while the tunnel runs:
	// kept while the tunnel is open, revoked once it is gone.
	var keptWhileOpen bool
	dropTunnel(t, d, up, key, func(ws *websocket.Conn) {
		d.srv.cache.Forget(id.Name)
		// A revocation now would close the tunnel; give it a round trip
		// through the tunnel to show.
		err := ws.WriteMessage(websocket.TextMessage, []byte("4.size,3.800,3.600;"))
		if err != nil {
			t.Fatal(err)
		}
		readUntil(t, ws, "4.size,1.0,3.800,3.600;")
		keptWhileOpen = slices.Equal(up.emu.LiveTokens(), token) && up.emu.Stats().OpenTunnels == 1
	})
	if !keptWhileOpen {
		t.Error("the retired token was revoked while its tunnel was open")
	}
	eventually(t, "the retired token is revoked",
		func() bool { return up.emu.Stats().Revocations == 1 })
	if slices.Contains(up.emu.LiveTokens(), token[0]) {
		t.Error("the retired token is still live at Guacamole")
	}
	mustGet(t, c, d.base(), selfPath, key, http.StatusOK)

	c.Transport.(*http.Transport).CloseIdleConnections()
	up.dropIdle()
	after := base.checkBack(t, "after the clients left")
	st, cs := up.emu.Stats(), d.srv.cache.Stats()
	t.Logf("drill: clients disconnecting: 1 request abandoned mid-answer (%d given up at guacamole), "+
		"2 tunnels cut mid-stream (tunnels opened %d, open now %d at guacproxy, %d at guacamole); "+
		"token checks %d; logins %d (1 before the retirement), revocations %d (%d before it), "+
		"live tokens %d; goroutines %d at the baseline, %d after",
		up.abandoned.Load(), st.TunnelsOpened, len(d.srv.handler.OpenTunnels()), st.OpenTunnels,
		up.checks.Load(), st.Logins, st.Revocations, afterDrop.Revocations, cs.Live,
		base.count, after)
	if st.Logins != 2 || cs.Live != 1 {
		t.Errorf("logins=%d live tokens=%d; want 2 and 1", st.Logins, cs.Live)
	}
}

// dropTunnel opens a WebSocket tunnel through guacproxy, exchanges a few
// instructions, runs during (if set) while the tunnel is open, then cuts the
// client's TCP connection with a reset. It waits until neither guacproxy
// nor Guacamole counts the tunnel, and returns the token Guacamole saw it
// opened with.
func dropTunnel(t *testing.T, d *running, up *drillUpstream, key string,
	during func(*websocket.Conn),
) []string {
	t.Helper()
	dialer := websocket.Dialer{Subprotocols: []string{"guacamole"}, HandshakeTimeout: drillBound}
	ws, resp, err := dialer.Dial("ws://"+d.srv.proxyAddr()+
		"/websocket-tunnel?GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c",
		http.Header{"Authorization": {"Bearer " + key}})
	if err != nil {
		t.Fatalf("open the tunnel: %v", err)
	}
	resp.Body.Close()
	_ = ws.SetReadDeadline(time.Now().Add(drillBound))
	readUntil(t, ws, "4.sync,")
	if err := ws.WriteMessage(websocket.TextMessage, []byte("4.size,4.1280,3.720;")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, "4.size,1.0,4.1280,3.720;")

	open, proxied := up.emu.Tunnels(), d.srv.handler.OpenTunnels()
	if len(open) != 1 || len(proxied) != 1 || slices.Collect(maps.Values(proxied))[0] != 1 {
		t.Fatalf("open tunnels: %d at guacamole, %v at guacproxy; want 1 each", len(open), proxied)
	}
	if during != nil {
		during(ws)
	}

	tcp := ws.NetConn().(*net.TCPConn)
	_ = tcp.SetLinger(0) // close with a reset, as a vanished client does
	_ = tcp.Close()
	eventually(t, "the tunnel is gone at guacproxy and at Guacamole", func() bool {
		return len(d.srv.handler.OpenTunnels()) == 0 && up.emu.Stats().OpenTunnels == 0
	})
	return []string{open[0].Token}
}

// readUntil reads tunnel messages until one contains want.
func readUntil(t *testing.T, ws *websocket.Conn, want string) {
	t.Helper()
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %q: %v", want, err)
		}
		if strings.Contains(string(msg), want) {
			return
		}
	}
}
