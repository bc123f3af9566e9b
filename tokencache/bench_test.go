package tokencache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

// benchIdentities returns n identities that all log in as one emulator user.
func benchIdentities(n int) []Identity {
	ids := make([]Identity, n)
	for i := range ids {
		ids[i] = Identity{Name: "bench-" + strconv.Itoa(i), Username: "svc-bench", Password: "bench-pw"}
	}
	return ids
}

// benchTransport is guacproxy's connection pool to Guacamole: the default
// transport with as many idle connections kept as cmd/guacproxy keeps.
func benchTransport(b *testing.B) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 256
	b.Cleanup(tr.CloseIdleConnections)
	return tr
}

// newBenchEmulator runs the Guacamole emulator on a loopback port with the
// one user of benchIdentities and the ban off.
func newBenchEmulator(b *testing.B) *guacamoletest.Server {
	b.Helper()
	emu := guacamoletest.NewServer(guacamoletest.Options{
		Users:      map[string]guacamoletest.User{"svc-bench": {Password: "bench-pw"}},
		DisableBan: true,
	})
	b.Cleanup(emu.Close)
	return emu
}

func newBenchCache(client *Client) *Cache {
	return New(Options{Client: client, SweepInterval: -1})
}

// fillCache logs every identity in, workers at a time.
func fillCache(b *testing.B, c *Cache, ids []Identity, workers int) {
	b.Helper()
	var (
		wg   sync.WaitGroup
		next = make(chan Identity)
		errs = make(chan error, workers)
	)
	for range workers {
		wg.Go(func() {
			for id := range next {
				if _, err := c.Token(context.Background(), id); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for _, id := range ids {
		select {
		case next <- id:
		case err := <-errs:
			close(next)
			wg.Wait()
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkTokenHit measures handing out a cached token, alone and from
// concurrent callers.
func BenchmarkTokenHit(b *testing.B) {
	c := newBenchCache(NewClient("http://guacamole.test", &http.Client{Transport: statelessGuacamole{}}))
	b.Cleanup(func() { _, _ = c.Close(context.Background()) })
	id := benchIdentities(1)[0]
	want, err := c.Token(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if t, _ := c.Token(context.Background(), id); t != want {
				b.Fatal("token changed")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if t, _ := c.Token(context.Background(), id); t != want {
					b.Error("token changed")
					return
				}
			}
		})
	})
}

// BenchmarkColdLogin measures 1,000 concurrent callers asking for the token
// of one identity the cache does not hold yet, against the emulator over
// loopback: one op is the time from their release until all have a token.
// It fails unless each op made exactly one login.
func BenchmarkColdLogin(b *testing.B) {
	const callers = 1000
	emu := newBenchEmulator(b)
	client := NewClient(emu.URL, &http.Client{Transport: benchTransport(b)})
	id := benchIdentities(1)[0]
	var logins int

	for b.Loop() {
		b.StopTimer()
		c := newBenchCache(client)
		before := emu.Stats().Logins
		var (
			wg     sync.WaitGroup
			start  = make(chan struct{})
			tokens = make([]*Token, callers)
			errs   = make([]error, callers)
		)
		for i := range callers {
			wg.Go(func() {
				<-start
				tokens[i], errs[i] = c.Token(context.Background(), id)
			})
		}
		b.StartTimer()

		close(start)
		wg.Wait()

		b.StopTimer()
		got := emu.Stats().Logins - before
		logins += got
		if got != 1 {
			b.Fatalf("%d callers made %d logins; want 1", callers, got)
		}
		for i := range callers {
			if errs[i] != nil || tokens[i] != tokens[0] {
				b.Fatalf("caller %d: token %p, error %v; want the shared token", i, tokens[i], errs[i])
			}
		}
		if _, err := c.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(logins)/float64(b.N), "logins/op")
}

// BenchmarkMemoryPerIdentity fills a cache with the tokens of 10,000
// identities and reports the heap it keeps per identity (B/identity): the
// live heap after a GC, before and after filling. Logins go to a stateless
// in-memory Guacamole so that only the cache's own memory is counted.
func BenchmarkMemoryPerIdentity(b *testing.B) {
	const n = 10000
	ids := benchIdentities(n)
	client := NewClient("http://guacamole.test", &http.Client{Transport: statelessGuacamole{}})
	var perIdentity float64

	for b.Loop() {
		b.StopTimer()
		c := newBenchCache(client)
		before := liveHeap()
		b.StartTimer()

		fillCache(b, c, ids, 1)

		b.StopTimer()
		after := liveHeap()
		perIdentity += float64(after-before) / n
		if st := c.Stats(); st.Live != n {
			b.Fatalf("cache holds %d tokens; want %d", st.Live, n)
		}
		runtime.KeepAlive(c)
		if _, err := c.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(perIdentity/float64(b.N), "B/identity")
}

// liveHeap returns the bytes of heap objects that survive two collections
// (the second empties the sync.Pool victim caches).
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkCloseRevoke measures Close revoking the tokens of 10,000
// identities at the emulator over loopback, bounded as guacproxy bounds it
// at shutdown (twice the call timeout). It fails unless the emulator saw
// every token revoked.
func BenchmarkCloseRevoke(b *testing.B) {
	const n = 10000
	emu := newBenchEmulator(b)
	client := NewClient(emu.URL, &http.Client{Transport: benchTransport(b)})
	ids := benchIdentities(n)

	for b.Loop() {
		b.StopTimer()
		c := newBenchCache(client)
		fillCache(b, c, ids, 32)
		before := emu.Stats().Revocations
		ctx, cancel := context.WithTimeout(context.Background(), 2*DefaultCallTimeout)
		b.StartTimer()

		st, err := c.Close(ctx)

		b.StopTimer()
		cancel()
		if err != nil || st.Revoked != n {
			b.Fatalf("Close revoked %d of %d: %v", st.Revoked, n, err)
		}
		if got := emu.Stats().Revocations - before; got != n {
			b.Fatalf("emulator saw %d revocations; want %d", got, n)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "revokes/s")
}

// statelessGuacamole is an in-memory http.RoundTripper that answers
// Guacamole's token endpoints without keeping any state: every login gets a
// fresh token and every revocation succeeds.
type statelessGuacamole struct{}

func (statelessGuacamole) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	switch {
	case req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/api/tokens"):
		var raw [32]byte
		_, _ = rand.Read(raw[:])
		body, _ := json.Marshal(Session{
			Token:                strings.ToUpper(hex.EncodeToString(raw[:])),
			Username:             "svc-bench",
			DataSource:           "default",
			AvailableDataSources: []string{"default"},
		})
		return memResponse(req, http.StatusOK, body), nil
	case req.Method == http.MethodDelete && strings.Contains(req.URL.Path, "/api/tokens/"):
		return memResponse(req, http.StatusNoContent, nil), nil
	}
	return nil, fmt.Errorf("unexpected %s %s", req.Method, req.URL.Path)
}

func memResponse(req *http.Request, status int, body []byte) *http.Response {
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
