package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wrkResult is what one wrk run reported.
type wrkResult struct {
	rps      float64
	p50, p99 time.Duration
	requests int
	non2xx   int
	errors   int // socket errors of any kind
}

var (
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal    = regexp.MustCompile(`(\d+) requests in`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkQuantile = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// runWrk runs wrk against url at fixed concurrency and parses its report.
func runWrk(ctx context.Context, wrk, url string, hdr map[string]string, threads, conns int,
	d time.Duration) (wrkResult, error) {
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency"}
	for k, v := range hdr {
		args = append(args, "-H", k+": "+v)
	}
	args = append(args, url)
	cctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, wrk, args...).CombinedOutput() //nolint:gosec // the operator names wrk
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk output: %s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkTotal.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.Atoi(m[1])
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.errors += n
		}
	}
	for _, m := range wrkQuantile.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		unit := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9}[m[3]]
		d := time.Duration(v * unit)
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if r.p50 == 0 || r.p99 == 0 {
		return r, fmt.Errorf("no latency distribution in wrk output: %s", out)
	}
	return r, nil
}

// rateResult is what one fixed-rate run measured.
type rateResult struct {
	sent, failed   int
	achieved       float64 // requests per second actually sent
	p50, p99, p999 time.Duration
}

// runRate sends GET url at a fixed rate for d over conns keep-alive
// connections, after a warm-up of one second that is not counted. Latency
// is measured from the time a request was due, not from when a connection
// was free to send it, so a server that falls behind is charged for the
// queue it causes (no coordinated omission).
func runRate(ctx context.Context, url string, hdr map[string]string, rate float64, conns int,
	d time.Duration) (rateResult, error) {
	const warmup = time.Second
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	var (
		due     = make(chan time.Time, conns*64)
		wg      sync.WaitGroup
		mu      sync.Mutex
		lat     []time.Duration
		failed  int
		firstEr error
	)
	start := time.Now()
	measureFrom := start.Add(warmup)
	for range conns {
		wg.Go(func() {
			var mine []time.Duration
			var bad int
			var badErr error
			for t := range due {
				err := get(ctx, client, url, hdr)
				l := time.Since(t)
				if t.Before(measureFrom) {
					continue
				}
				if err != nil {
					bad++
					badErr = err
					continue
				}
				mine = append(mine, l)
			}
			mu.Lock()
			lat = append(lat, mine...)
			failed += bad
			if firstEr == nil {
				firstEr = badErr
			}
			mu.Unlock()
		})
	}

	interval := time.Duration(float64(time.Second) / rate)
	end := measureFrom.Add(d)
	sent := 0
	for i := 0; ; i++ {
		t := start.Add(time.Duration(i) * interval)
		if !t.Before(end) || ctx.Err() != nil {
			break
		}
		if w := time.Until(t); w > 0 {
			time.Sleep(w)
		}
		due <- t
		if !t.Before(measureFrom) {
			sent++
		}
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(measureFrom)

	r := rateResult{sent: sent, failed: failed, achieved: float64(sent) / elapsed.Seconds()}
	if len(lat) == 0 {
		return r, fmt.Errorf("no request succeeded: %w", firstEr)
	}
	slices.Sort(lat)
	r.p50, r.p99, r.p999 = quantile(lat, 0.50), quantile(lat, 0.99), quantile(lat, 0.999)
	if failed > 0 {
		return r, fmt.Errorf("%d of %d requests failed, first: %w", failed, sent, firstEr)
	}
	return r, nil
}

// quantile returns the q-quantile of sorted.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// get sends one GET and reads the whole answer; anything but 200 is an
// error.
func get(ctx context.Context, client *http.Client, url string, hdr map[string]string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d (%d bytes)", resp.StatusCode, n)
	}
	return nil
}

// lineWatcher copies a child's output to w and reports the first line that
// contains any of the wanted strings, with the time it was read.
type lineWatcher struct {
	want []string
	seen chan seenLine
}

type seenLine struct {
	at   time.Time
	line string
}

func watchLines(r io.Reader, w io.Writer, want ...string) *lineWatcher {
	lw := &lineWatcher{want: want, seen: make(chan seenLine, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			for _, s := range lw.want {
				if strings.Contains(line, s) {
					select {
					case lw.seen <- seenLine{at: time.Now(), line: line}:
					default:
					}
				}
			}
			fmt.Fprintln(w, line)
		}
	}()
	return lw
}
