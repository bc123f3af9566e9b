package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runOptions are the flags of "guacbench run".
type runOptions struct {
	guacproxy    string
	wrk          string
	nginx        string
	dir          string
	rounds       int
	duration     time.Duration
	threads      int
	conns        int
	rateRounds   int
	rate         float64
	rateDuration time.Duration
	cold         int
	coldRounds   int
	revoke       int
	profile      string
	steps        string
}

// Targets, in the order of the tables.
const (
	direct    = "direct"
	bare      = "bare"
	tuned     = "tuned"
	guacproxy = "guacproxy"
	nginx     = "nginx"
)

// target is one server the load generators measure.
type target struct {
	name string
	url  string
	hdr  map[string]string
	proc *child // whose CPU time is charged to the target

	wrk  []wrkResult
	cpu  []time.Duration // CPU time of proc per request, per wrk round
	rate []rateResult
}

// bench is one run of the whole measurement.
type bench struct {
	o        runOptions
	out      io.Writer
	self     string
	password string
	seed     string // API keys are derived from it
	upAddr   string
	upURL    string // the stand-in's base URL, with basePath
	token    string // the static token of direct, bare, tuned and nginx
	upstream *child
	children []*child
	targets  []*target
	summary  []string
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	var o runOptions
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.guacproxy, "guacproxy", "", "guacproxy binary (required)")
	fs.StringVar(&o.wrk, "wrk", "wrk", "wrk binary")
	fs.StringVar(&o.nginx, "nginx", "nginx", "nginx binary")
	fs.StringVar(&o.dir, "dir", "", "directory for configs and logs (default: a new temporary one)")
	fs.IntVar(&o.rounds, "rounds", 3, "wrk rounds over all targets")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each wrk run")
	fs.IntVar(&o.threads, "threads", 2, "wrk threads")
	fs.IntVar(&o.conns, "connections", 32, "wrk connections, and connections of the fixed-rate load")
	fs.IntVar(&o.rateRounds, "rate-rounds", 2, "fixed-rate rounds over all targets")
	fs.Float64Var(&o.rate, "rate", 0, "requests per second of the fixed-rate step (default: half of guacproxy's peak)")
	fs.DurationVar(&o.rateDuration, "rate-duration", 10*time.Second, "length of each fixed-rate run")
	fs.IntVar(&o.cold, "cold", 200, "identities logging in at once in the cold-path test")
	fs.IntVar(&o.coldRounds, "cold-rounds", 3, "cold-path repetitions, each with a fresh guacproxy")
	fs.IntVar(&o.revoke, "revoke", 10000, "tokens guacproxy holds when it is stopped")
	fs.StringVar(&o.profile, "profile", "", "write a CPU profile of guacproxy's handler under load here")
	fs.StringVar(&o.steps, "steps", "throughput,latency,cold,revoke",
		"steps to run, in this order; latency needs throughput")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.guacproxy == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "guacbench run: --guacproxy BIN is required, and nothing else")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{o: o, out: stdout}
	err := b.run(ctx)
	b.stopAll()
	if err != nil {
		fmt.Fprintf(stderr, "guacbench run: %v\n", err)
		return 1
	}
	return 0
}

func (b *bench) run(ctx context.Context) error {
	want := map[string]bool{}
	for _, s := range strings.Split(b.o.steps, ",") {
		want[strings.TrimSpace(s)] = true
	}
	if want["latency"] && !want["throughput"] {
		return errors.New("the latency step needs the throughput step")
	}
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.startTargets(ctx); err != nil {
		return err
	}
	steps := []struct {
		run func(context.Context) error
		on  bool
	}{
		{b.throughput, want["throughput"]},
		{b.latency, want["latency"]},
		{b.stopTargets, true},
		{b.profileGuacproxy, b.o.profile != ""},
		{b.coldPath, want["cold"]},
		{b.revocation, want["revoke"]},
	}
	for _, step := range steps {
		if !step.on {
			continue
		}
		if err := step.run(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	b.printf("\n## Targets\n\n")
	for _, s := range b.summary {
		b.printf("- %s\n", s)
	}
	return nil
}

func (b *bench) printf(format string, args ...any) { fmt.Fprintf(b.out, format, args...) }

// setup starts the stand-in Guacamole and logs in to it for the static
// token.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.o.dir == "" {
		if b.o.dir, err = os.MkdirTemp("", "guacbench-"); err != nil {
			return err
		}
	}
	// nginx's workers do not run as root and need to reach their temp paths.
	if err := os.Chmod(b.o.dir, 0o755); err != nil { //nolint:gosec // the files in it are 0600
		return err
	}
	b.password, b.seed = rand.Text(), rand.Text()

	up, err := freeAddrs(1)
	if err != nil {
		return err
	}
	b.upAddr = up[0]
	b.upURL = "http://" + b.upAddr + basePath
	b.upstream, err = b.start("upstream", nil, nil, b.self, "upstream", "--listen", b.upAddr)
	if err != nil {
		return err
	}
	if err := waitStatus(ctx, "http://"+b.upAddr+statsPath, nil, http.StatusOK, 10*time.Second); err != nil {
		return err
	}
	b.token, err = login(ctx, b.upURL, b.password)
	b.printf("# guacbench: %s, %d-second wrk runs, %d threads, %d connections\n\n",
		time.Now().Format("2006-01-02 15:04"), int(b.o.duration.Seconds()), b.o.threads, b.o.conns)
	b.printf("Files and logs: %s\n", b.o.dir)
	return err
}

// start runs a child process with the bench's secrets in its environment.
func (b *bench) start(name string, env, watch []string, path string, args ...string) (*child, error) {
	env = append([]string{passwordEnv + "=" + b.password, tokenEnv + "=" + b.token,
		keyEnv + "=" + identityKey(b.seed, 0)}, env...)
	c, err := startChild(b.o.dir, name, env, watch, path, args...)
	if err != nil {
		return nil, err
	}
	b.children = append(b.children, c)
	return c, nil
}

func (b *bench) stopAll() {
	for i := len(b.children) - 1; i >= 0; i-- {
		b.children[i].stop(10 * time.Second)
	}
}

// startTargets starts the bare, tuned and nginx proxies and a guacproxy with
// one identity, and checks that each serves the REST call.
func (b *bench) startTargets(ctx context.Context) error {
	names := []string{bare, tuned, guacproxy, guacproxy + "-admin", nginx}
	free, err := freeAddrs(len(names))
	if err != nil {
		return err
	}
	addrs := map[string]string{}
	for i, name := range names {
		addrs[name] = free[i]
	}

	bareProc, err := b.start(bare, nil, nil, b.self, "proxy", "--listen", addrs[bare], "--upstream", b.upURL)
	if err != nil {
		return err
	}
	tunedProc, err := b.start(tuned, nil, nil, b.self, "proxy", "--tuned", "--listen", addrs[tuned],
		"--upstream", b.upURL)
	if err != nil {
		return err
	}
	gp, err := b.startGuacproxy("guacproxy", addrs[guacproxy], addrs[guacproxy+"-admin"], 1, nil)
	if err != nil {
		return err
	}
	conf, err := writeNginxConfig(b.o.dir, addrs[nginx], b.upAddr, b.token)
	if err != nil {
		return err
	}
	ng, err := b.start(nginx, nil, nil, b.o.nginx, "-p", b.o.dir, "-c", conf,
		"-e", filepath.Join(b.o.dir, "nginx-error.log"))
	if err != nil {
		return err
	}

	tokenHdr := map[string]string{"Guacamole-Token": b.token}
	b.targets = []*target{
		{name: direct, url: b.upURL + restPath, hdr: tokenHdr, proc: b.upstream},
		{name: bare, url: "http://" + addrs[bare] + restPath, hdr: tokenHdr, proc: bareProc},
		{name: tuned, url: "http://" + addrs[tuned] + restPath, hdr: tokenHdr, proc: tunedProc},
		{name: guacproxy, url: "http://" + addrs[guacproxy] + restPath,
			hdr: map[string]string{"Authorization": "Bearer " + identityKey(b.seed, 0)}, proc: gp},
		{name: nginx, url: "http://" + addrs[nginx] + restPath, hdr: tokenHdr, proc: ng},
	}
	// The bare proxies and nginx send the static token themselves: their
	// clients send none.
	for _, t := range b.targets[1:] {
		if t.name != guacproxy {
			t.hdr = nil
		}
	}
	for _, t := range b.targets {
		// The first call through guacproxy logs in: the cache is warm after.
		if err := waitStatus(ctx, t.url, t.hdr, http.StatusOK, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	// An answer could come from someone else's server if a child failed to
	// listen.
	for _, t := range b.targets {
		select {
		case <-t.proc.done:
			return fmt.Errorf("%s exited early: see %s.log", t.name, t.proc.name)
		default:
		}
	}
	return nil
}

// startGuacproxy writes a configuration with n identities and runs
// guacproxy serve with it until /readyz answers.
func (b *bench) startGuacproxy(name, listen, admin string, n int, watch []string) (*child, error) {
	conf := filepath.Join(b.o.dir, name+".yaml")
	if err := writeGuacproxyConfig(conf, listen, admin, b.upURL, b.seed, n); err != nil {
		return nil, err
	}
	c, err := b.start(name, nil, watch, b.o.guacproxy, "serve", "--config", conf)
	if err != nil {
		return nil, err
	}
	if err := waitStatus(context.Background(), "http://"+admin+"/readyz", nil, http.StatusOK,
		30*time.Second); err != nil {
		return nil, fmt.Errorf("%s: %w (see %s.log)", name, err, name)
	}
	return c, nil
}

// rotated returns the targets starting at the i-th, so that no target is
// always measured first or last.
func (b *bench) rotated(i int) []*target {
	i %= len(b.targets)
	return append(append([]*target(nil), b.targets[i:]...), b.targets[:i]...)
}

func (b *bench) target(name string) *target {
	for _, t := range b.targets {
		if t.name == name {
			return t
		}
	}
	return nil
}

// throughput runs wrk against every target, rounds times, alternating.
func (b *bench) throughput(ctx context.Context) error {
	for r := range b.o.rounds {
		for _, t := range b.rotated(r) {
			cpu0, err := cpuTime(t.proc.cmd.Process.Pid)
			if err != nil {
				return err
			}
			res, err := runWrk(ctx, b.o.wrk, t.url, t.hdr, b.o.threads, b.o.conns, b.o.duration)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			cpu1, _ := cpuTime(t.proc.cmd.Process.Pid)
			if res.non2xx > 0 || res.errors > 0 {
				return fmt.Errorf("%s: %d non-2xx answers and %d socket errors under load",
					t.name, res.non2xx, res.errors)
			}
			t.wrk = append(t.wrk, res)
			t.cpu = append(t.cpu, (cpu1-cpu0)/time.Duration(max(res.requests, 1)))
			fmt.Fprintf(os.Stderr, "wrk round %d %-9s %8.0f req/s  p50 %s  p99 %s  load %s\n",
				r+1, t.name, res.rps, ms(res.p50), ms(res.p99), loadavg())
		}
	}

	gp := b.target(guacproxy)
	b.printf("\n## Throughput: wrk -t%d -c%d -d%s --latency, %d rounds (medians)\n\n",
		b.o.threads, b.o.conns, b.o.duration, b.o.rounds)
	b.printf("| target | req/s | p50 | p99 | CPU per request | req/s by round | guacproxy ÷ target |\n")
	b.printf("|---|---:|---:|---:|---:|---|---:|\n")
	for _, t := range b.targets {
		var rounds []string
		for _, w := range t.wrk {
			rounds = append(rounds, fmt.Sprintf("%.0f", w.rps))
		}
		b.printf("| %s | %.0f | %s | %s | %s | %s | %.2f |\n", t.name, t.rps(), ms(t.p50()), ms(t.p99()),
			us(median(t.cpu)), strings.Join(rounds, ", "), gp.rps()/t.rps())
	}
	b.printf("\nLoad average after this step: %s. ", loadavg())
	b.printf("CPU per request is the target process's own CPU time (for direct, the\n" +
		"stand-in's; for nginx, master and workers) over the requests wrk completed.\n")

	b.check(fmt.Sprintf("throughput ≥ 1.0× tuned bare proxy at %d connections", b.o.conns),
		gp.rps()/b.target(tuned).rps(), 1.0, true, "×")
	b.check(fmt.Sprintf("throughput ≥ 0.6× nginx at %d connections", b.o.conns),
		gp.rps()/b.target(nginx).rps(), 0.6, true, "×")
	return nil
}

func (t *target) rps() float64 {
	return median(mapSlice(t.wrk, func(w wrkResult) float64 { return w.rps }))
}

func (t *target) p50() time.Duration {
	return median(mapSlice(t.wrk, func(w wrkResult) time.Duration { return w.p50 }))
}

func (t *target) p99() time.Duration {
	return median(mapSlice(t.wrk, func(w wrkResult) time.Duration { return w.p99 }))
}

// latency sends a fixed rate of half guacproxy's peak to every target and
// compares the tail latency with the stand-in's own.
func (b *bench) latency(ctx context.Context) error {
	rate, what := b.o.rate, "set by --rate"
	if rate <= 0 {
		rate, what = b.target(guacproxy).rps()/2, "half of guacproxy's peak"
	}
	for r := range b.o.rateRounds {
		for _, t := range b.rotated(r) {
			res, err := runRate(ctx, t.url, t.hdr, rate, b.o.conns, b.o.rateDuration)
			if err != nil {
				return fmt.Errorf("%s at %.0f req/s: %w", t.name, rate, err)
			}
			t.rate = append(t.rate, res)
			fmt.Fprintf(os.Stderr, "rate round %d %-9s %8.0f req/s  p50 %s  p99 %s  load %s\n",
				r+1, t.name, res.achieved, ms(res.p50), ms(res.p99), loadavg())
		}
	}

	p99 := func(t *target) time.Duration {
		return median(mapSlice(t.rate, func(r rateResult) time.Duration { return r.p99 }))
	}
	base := p99(b.target(direct))
	b.printf("\n## Latency at a fixed %.0f req/s (%s), %d connections, "+
		"%d rounds of %s (medians)\n\n", rate, what, b.o.conns, b.o.rateRounds, b.o.rateDuration)
	b.printf("| target | sent req/s | p50 | p99 | p99.9 | p99 over direct |\n|---|---:|---:|---:|---:|---:|\n")
	for _, t := range b.targets {
		b.printf("| %s | %.0f | %s | %s | %s | %s |\n", t.name,
			median(mapSlice(t.rate, func(r rateResult) float64 { return r.achieved })),
			ms(median(mapSlice(t.rate, func(r rateResult) time.Duration { return r.p50 }))),
			ms(p99(t)),
			ms(median(mapSlice(t.rate, func(r rateResult) time.Duration { return r.p999 }))),
			signedMs(p99(t)-base))
	}
	b.printf("\nLoad average after this step: %s.\n", loadavg())
	added := p99(b.target(guacproxy)) - base
	b.check("added p99 over direct at "+what+" ≤ 0.5 ms",
		float64(added)/1e6, 0.5, false, " ms")
	return nil
}

// stopTargets stops every proxy, keeping the stand-in, so that the
// remaining steps have the machine to themselves.
func (b *bench) stopTargets(context.Context) error {
	for _, t := range b.targets {
		if t.proc != b.upstream {
			t.proc.stop(10 * time.Second)
		}
	}
	return nil
}

// profileGuacproxy, if asked to, runs guacproxy's handler in a guacbench
// process with pprof and records a CPU profile while wrk loads it.
func (b *bench) profileGuacproxy(ctx context.Context) error {
	free, err := freeAddrs(2)
	if err != nil {
		return err
	}
	listen, pprofAddr := free[0], free[1]
	c, err := b.start("inproc", nil, nil, b.self, "inproc", "--listen", listen, "--pprof", pprofAddr,
		"--upstream", b.upURL)
	if err != nil {
		return err
	}
	defer c.stop(10 * time.Second)
	url := "http://" + listen + restPath
	hdr := map[string]string{"Authorization": "Bearer " + identityKey(b.seed, 0)}
	if err := waitStatus(ctx, url, hdr, http.StatusOK, 10*time.Second); err != nil {
		return err
	}

	var (
		wg   sync.WaitGroup
		prof []byte
		perr error
		res  wrkResult
		werr error
	)
	secs := int(b.o.duration.Seconds())
	wg.Go(func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs), nil)
		if err != nil {
			perr = err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			perr = err
			return
		}
		defer resp.Body.Close()
		prof, perr = io.ReadAll(resp.Body)
	})
	wg.Go(func() {
		res, werr = runWrk(ctx, b.o.wrk, url, hdr, b.o.threads, b.o.conns, b.o.duration+time.Second)
	})
	wg.Wait()
	if err := errors.Join(perr, werr); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	if err := os.WriteFile(b.o.profile, prof, 0o600); err != nil {
		return err
	}
	b.printf("\nCPU profile of guacproxy's handler (in-process copy, %.0f req/s under wrk): %s\n",
		res.rps, b.o.profile)
	return nil
}

// coldPath starts a fresh guacproxy with cold identities, releases one
// request for each at once, and measures the time until all are served.
func (b *bench) coldPath(ctx context.Context) error {
	n := b.o.cold
	b.printf("\n## Cold path: %d identities with no token, one request each, released at once\n\n", n)
	b.printf("| round | all served in | median request | slowest request | logins at Guacamole |\n")
	b.printf("|---|---:|---:|---:|---:|\n")
	var worst time.Duration
	for r := range b.o.coldRounds {
		free, err := freeAddrs(2)
		if err != nil {
			return err
		}
		listen, admin := free[0], free[1]
		c, err := b.startGuacproxy(fmt.Sprintf("guacproxy-cold-%d", r+1), listen, admin, n, nil)
		if err != nil {
			return err
		}
		st0, err := fetchStats(ctx, b.upAddr)
		if err != nil {
			return err
		}
		all, lat, err := coldRequests(ctx, "http://"+listen, b.seed, n)
		if err != nil {
			c.stop(30 * time.Second)
			return fmt.Errorf("cold round %d: %w", r+1, err)
		}
		st1, _ := fetchStats(ctx, b.upAddr)
		c.stop(30 * time.Second)
		logins := st1.Logins - st0.Logins
		b.printf("| %d | %s | %s | %s | %d |\n", r+1, ms(all), ms(quantile(lat, 0.5)),
			ms(lat[len(lat)-1]), logins)
		if logins != n {
			return fmt.Errorf("cold round %d: %d logins for %d identities", r+1, logins, n)
		}
		worst = max(worst, all)
	}
	b.summary = append(b.summary, fmt.Sprintf("cold path: %d identities served in at most %s "+
		"(no target set), one login each", n, ms(worst)))
	return nil
}

// coldRequests opens one connection per identity (with a request guacproxy
// refuses without logging in), then sends one REST call per identity at
// once. It returns the time until all were served and each one's latency,
// sorted.
func coldRequests(ctx context.Context, base, seed string, n int) (time.Duration, []time.Duration, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/tokens", nil)
			req.Header.Set("Authorization", "Bearer "+identityKey(seed, i))
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()

	start := make(chan struct{})
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var t0 time.Time
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = get(ctx, client, base+restPath,
				map[string]string{"Authorization": "Bearer " + identityKey(seed, i)})
			lat[i] = time.Since(t0)
		})
	}
	t0 = time.Now()
	close(start)
	wg.Wait()
	all := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return 0, nil, err
	}
	slices.Sort(lat)
	return all, lat, nil
}

// revocation fills a fresh guacproxy with tokens, stops it with SIGTERM and
// measures how long it takes to revoke them all.
func (b *bench) revocation(ctx context.Context) error {
	n := b.o.revoke
	free, err := freeAddrs(2)
	if err != nil {
		return err
	}
	listen, admin := free[0], free[1]
	c, err := b.startGuacproxy("guacproxy-revoke", listen, admin, n,
		[]string{`"tokens revoked"`, `"tokens left unrevoked"`})
	if err != nil {
		return err
	}
	st0, err := fetchStats(ctx, b.upAddr)
	if err != nil {
		return err
	}
	warm, err := warmIdentities(ctx, "http://"+listen, b.seed, n, b.o.conns)
	if err != nil {
		return fmt.Errorf("filling guacproxy with %d tokens: %w", n, err)
	}
	st1, _ := fetchStats(ctx, b.upAddr)
	if got := st1.Logins - st0.Logins; got != n {
		return fmt.Errorf("%d logins for %d identities", got, n)
	}

	t0 := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	var line seenLine
	select {
	case line = <-c.watch.seen:
	case <-time.After(2 * time.Minute):
		return errors.New("guacproxy did not report its revocations within 2 minutes")
	}
	select {
	case <-c.done:
	case <-time.After(time.Minute):
	}
	exit := time.Since(t0)
	c.stop(time.Second)
	st2, _ := fetchStats(ctx, b.upAddr)

	var logged struct {
		Msg        string `json:"msg"`
		Revoked    int    `json:"revoked"`
		NotRevoked int    `json:"not_revoked"`
	}
	_ = json.Unmarshal([]byte(line.line), &logged)
	revokeTime := line.at.Sub(t0)
	b.printf("\n## Shutdown revocation: %d tokens\n\n", n)
	b.printf("| filled in | SIGTERM → \"%s\" | SIGTERM → exit | revoked (log) | not revoked (log) | "+
		"revocations at Guacamole |\n|---:|---:|---:|---:|---:|---:|\n", logged.Msg)
	b.printf("| %s | %s | %s | %d | %d | %d |\n", ms(warm), ms(revokeTime), ms(exit),
		logged.Revoked, logged.NotRevoked, st2.Revocations-st1.Revocations)
	b.check(fmt.Sprintf("revoking %d tokens at shutdown ≤ 5 s", n), revokeTime.Seconds(), 5, false, " s")
	if logged.Revoked != n {
		return fmt.Errorf("guacproxy revoked %d of %d tokens", logged.Revoked, n)
	}
	return nil
}

// warmIdentities sends one REST call for each of n identities, workers at
// a time, and returns how long it took.
func warmIdentities(ctx context.Context, base, seed string, n, workers int) (time.Duration, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	next := make(chan int)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := range next {
				err := get(ctx, client, base+restPath,
					map[string]string{"Authorization": "Bearer " + identityKey(seed, i)})
				if err != nil {
					errc <- fmt.Errorf("identity %d: %w", i, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errc:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return time.Since(start), err
}

// check records whether a measured value meets its target.
func (b *bench) check(what string, got, want float64, atLeast bool, unit string) {
	met := got <= want
	if atLeast {
		met = got >= want
	}
	verdict := "met"
	if !met {
		verdict = "MISSED"
	}
	b.summary = append(b.summary, fmt.Sprintf("%s: %.2f%s — %s", what, got, unit, verdict))
}

func median[T float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mapSlice[T, U any](xs []T, f func(T) U) []U {
	out := make([]U, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func signedMs(d time.Duration) string { return fmt.Sprintf("%+.2f ms", float64(d)/1e6) }

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }

// loadavg returns the 1-, 5- and 15-minute load averages: other work on the
// machine shows there, and skews every number.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}
