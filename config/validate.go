package config

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits on the files Validate reads, so that pointing a setting at the
// wrong file (a device, a log) fails quickly instead of exhausting memory.
const (
	maxPasswordFile = 64 << 10
	maxCAFile       = 16 << 20
)

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"json", "console"}
)

// Validate checks c against every rule and resolves its secrets. It reads
// each password file, password environment variable and the CA file, then
// fills Identity.Password, Identity.APIKeyHashes and Guacamole.RootCAs and
// trims trailing slashes from Guacamole.URL. It does not apply defaults.
//
// On any problem Validate returns Errors listing all of them and leaves c
// unchanged.
func (c *Config) Validate() error {
	return c.validate().errs.err()
}

// report collects rule violations. Each remembers the other fields it was
// derived from, so that Parse can drop those caused by a field that failed to
// decode and so still holds its default.
type report struct {
	errs   Errors
	inputs [][]string // inputs[i] are the fields errs[i] depends on
}

func (r *report) add(path, format string, args ...any) {
	r.addFrom(nil, path, format, args...)
}

func (r *report) addFrom(inputs []string, path, format string, args ...any) {
	r.errs.add(path, format, args...)
	r.inputs = append(r.inputs, inputs)
}

// except returns the violations that none of decodeErrs explains.
func (r *report) except(decodeErrs Errors) Errors {
	explained := func(path string) bool {
		return slices.ContainsFunc(decodeErrs, func(e FieldError) bool {
			return covers(e.Path, path)
		})
	}
	var out Errors
	for i, e := range r.errs {
		if !explained(e.Path) && !slices.ContainsFunc(r.inputs[i], explained) {
			out = append(out, e)
		}
	}
	return out
}

// resolved holds what validate derives from an identity.
type resolved struct {
	password string
	hashes   [][32]byte
	nets     []netip.Prefix
}

// validate checks every rule and, only if all pass, stores the resolved
// values in c.
func (c *Config) validate() *report {
	r := new(report)

	lhost, lport, lok := checkAddr(r, "listen", c.Listen)
	ahost, aport, aok := checkAddr(r, "admin_listen", c.AdminListen)
	if lok && aok && sameAddr(lhost, lport, ahost, aport) {
		r.addFrom([]string{"listen"}, "admin_listen", "must differ from listen")
	}

	base, scheme := checkURL(r, "guacamole.url", c.Guacamole.URL)
	var pool *x509.CertPool
	if c.Guacamole.CAFile != "" {
		if scheme == "http" {
			r.addFrom([]string{"guacamole.url"}, "guacamole.ca_file",
				"only used with https, but guacamole.url is http")
		} else {
			pool = loadCA(r, "guacamole.ca_file", c.Guacamole.CAFile)
		}
	}

	g := c.Guacamole
	if g.Timeout <= 0 {
		r.add("guacamole.timeout", "must be greater than zero")
	}
	if g.RequestTimeout <= 0 {
		r.add("guacamole.request_timeout", "must be greater than zero")
	}
	if g.Ban.MaxFailures < 1 {
		r.add("guacamole.ban.max_failures", "must be at least 1")
	}
	if g.Ban.Window < time.Second {
		r.add("guacamole.ban.window", "must be at least 1s")
	}
	switch {
	case g.SessionTimeout < MinSessionTimeout:
		r.add("guacamole.session_timeout", "must be at least %s, since guacproxy "+
			"drops tokens at least 2m before Guacamole would; got %s",
			shortDuration(MinSessionTimeout), shortDuration(g.SessionTimeout))
	case g.SessionTimeout%time.Minute != 0:
		r.add("guacamole.session_timeout", "must be whole minutes, as Guacamole's "+
			"api-session-timeout is; got %s", shortDuration(g.SessionTimeout))
	}
	if c.Tokens.MaxLifetime <= 0 {
		r.add("tokens.max_lifetime", "must be greater than zero")
	}
	if c.ShutdownGrace < 0 {
		r.add("shutdown_grace", "must not be negative")
	}
	checkOneOf(r, "log.level", c.Log.Level, logLevels)
	checkOneOf(r, "log.format", c.Log.Format, logFormats)

	cert, _ := checkTLS(r, c.TLS)
	var clientCAs *x509.CertPool
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile != "" {
		clientCAs = loadCA(r, "tls.client_ca_file", c.TLS.ClientCAFile)
	}
	proxies := checkCIDRs(r, "trusted_proxies", c.TrustedProxies)

	ids := c.checkIdentities(r)

	if len(r.errs) > 0 {
		return r
	}
	c.TLS.Certificate = cert
	c.TLS.ClientCAs = clientCAs
	c.TrustedProxyNets = proxies
	c.Guacamole.URL = base
	c.Guacamole.RootCAs = pool
	for i, id := range ids {
		c.Identities[i].Password = id.password
		c.Identities[i].APIKeyHashes = id.hashes
		c.Identities[i].SourceNets = id.nets
	}
	return r
}

// checkIdentities validates the identities and returns their resolved
// secrets and key hashes, index for index.
func (c *Config) checkIdentities(r *report) []resolved {
	if len(c.Identities) == 0 {
		r.add("identities", "at least one identity is required")
		return nil
	}

	out := make([]resolved, len(c.Identities))
	names := make(map[string]int)     // name -> first index
	keys := make(map[[32]byte]string) // hash -> path of first use
	var defaults []string
	for i, id := range c.Identities {
		p := fmt.Sprintf("identities[%d]", i)

		switch first, dup := names[id.Name]; {
		case id.Name == "":
			r.add(p+".name", "required")
		case !nameRE.MatchString(id.Name):
			r.add(p+".name", "must be lower-case letters, digits, '.', '_' and '-', "+
				"starting with a letter or digit; got %q", id.Name)
		case dup:
			r.add(p+".name", "%q is already used by identities[%d]", id.Name, first)
		default:
			names[id.Name] = i
		}
		if strings.TrimSpace(id.Username) == "" {
			r.add(p+".username", "required")
		}

		out[i].password = resolvePassword(r, p, id)
		out[i].hashes = checkKeys(r, p, id.APIKeysSHA256, keys)
		out[i].nets = c.checkMatchers(r, p, id)
		if !recognisable(id) {
			r.addFrom([]string{p + ".default", p + ".api_keys_sha256", p + ".client_cert",
				p + ".header", p + ".source_cidrs"}, p,
				"needs a matcher (api_keys_sha256, client_cert, header or "+
					"source_cidrs) or default: true, or no request could ever use it")
		}
		if id.Default {
			defaults = append(defaults, p)
		}
	}
	if len(defaults) > 1 {
		r.add("identities", "only one identity may have default: true; found %s",
			strings.Join(defaults, ", "))
	}
	return out
}

// resolvePassword returns the password of identity id, found at path p.
func resolvePassword(r *report, p string, id Identity) string {
	sources := []string{p + ".password_file", p + ".password_env"}
	switch {
	case id.PasswordFile != "" && id.PasswordEnv != "":
		r.addFrom(sources, p, "set only one of password_file and password_env")
	case id.PasswordFile != "":
		data, err := readFile(id.PasswordFile, maxPasswordFile)
		if err != nil {
			r.add(p+".password_file", "%s", describeReadError(err))
			return ""
		}
		pw := string(data)
		if s, ok := strings.CutSuffix(pw, "\n"); ok {
			pw = strings.TrimSuffix(s, "\r")
		}
		if pw == "" {
			r.add(p+".password_file", "file is empty")
		}
		return pw
	case id.PasswordEnv != "":
		pw, ok := os.LookupEnv(id.PasswordEnv)
		switch {
		case !ok:
			r.add(p+".password_env", "environment variable %q is not set", id.PasswordEnv)
		case pw == "":
			r.add(p+".password_env", "environment variable %q is empty", id.PasswordEnv)
		}
		return pw
	case id.Password != "":
		// Set directly by a Config built in code.
		return id.Password
	default:
		r.addFrom(sources, p, "one of password_file or password_env is required")
	}
	return ""
}

// checkKeys decodes the hex hashes of an identity's API keys. seen maps each
// hash already accepted, in this or an earlier identity, to its path.
func checkKeys(r *report, p string, hexes []string, seen map[[32]byte]string) [][32]byte {
	var out [][32]byte
	for j, h := range hexes {
		kp := fmt.Sprintf("%s.api_keys_sha256[%d]", p, j)

		// The value is not quoted: someone may have pasted the key itself.
		var sum [32]byte
		if n, err := hex.Decode(sum[:], []byte(h)); len(h) != 64 || err != nil || n != 32 {
			r.add(kp, "must be 64 hexadecimal characters, "+
				"the SHA-256 of the API key (not the key itself)")
			continue
		}
		if first, dup := seen[sum]; dup {
			r.add(kp, "same key as %s", first)
			continue
		}
		seen[sum] = kp
		out = append(out, sum)
	}
	return out
}

// checkAddr checks a listen address of the form host:port.
func checkAddr(r *report, path, addr string) (host, port string, ok bool) {
	if addr == "" {
		r.add(path, "required")
		return "", "", false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		r.add(path, `%q is not host:port, such as "127.0.0.1:8080"`, addr)
		return "", "", false
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		r.add(path, "port %q must be a number from 0 to 65535", port)
		return "", "", false
	}
	return host, port, true
}

// sameAddr reports whether two listen addresses would collide. A wildcard
// host collides with every host on the same port; port 0 picks a free port
// and never collides.
func sameAddr(host1, port1, host2, port2 string) bool {
	p1, _ := strconv.Atoi(port1)
	p2, _ := strconv.Atoi(port2)
	if p1 != p2 || p1 == 0 {
		return false
	}
	return strings.EqualFold(host1, host2) || isWildcard(host1) || isWildcard(host2)
}

func isWildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// checkURL checks Guacamole's base URL and returns it without trailing
// slashes, along with its scheme ("http" or "https"; empty if the URL is
// too broken to tell). The URL is never quoted in messages, as it could carry
// credentials.
func checkURL(r *report, path, raw string) (base, scheme string) {
	if raw == "" {
		r.add(path, "required")
		return "", ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		r.add(path, "is not a valid URL")
		return "", ""
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		r.add(path, "must be an absolute http:// or https:// URL")
		return "", ""
	}

	if u.Opaque != "" || u.Hostname() == "" {
		r.add(path, "must include a host")
	}
	if u.User != nil {
		r.add(path, "must not include a user name or password")
	}
	if strings.Contains(raw, "?") {
		r.add(path, "must not include a query")
	}
	if strings.Contains(raw, "#") {
		r.add(path, "must not include a fragment")
	}
	return strings.TrimRight(raw, "/"), u.Scheme
}

// loadCA reads a PEM bundle and returns a pool of its certificates.
func loadCA(r *report, path, file string) *x509.CertPool {
	data, err := readFile(file, maxCAFile)
	if err != nil {
		r.add(path, "%s", describeReadError(err))
		return nil
	}

	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		n++
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			r.add(path, "certificate %d: %v", n, err)
			return nil
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		r.add(path, "contains no PEM certificate")
		return nil
	}
	return pool
}

func checkOneOf(r *report, path, value string, allowed []string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	r.add(path, "must be one of %s; got %q", strings.Join(allowed, ", "), value)
}

// shortDuration formats d without zero trailing units: "3m" rather than
// "3m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

var errTooLarge = errors.New("file too large")

// readFile reads at most limit bytes of the named file.
func readFile(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d KiB", errTooLarge, limit>>10)
	}
	return data, nil
}

// describeReadError turns an error from readFile into a message. The path is
// left out because the message is reported against the field naming it.
func describeReadError(err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, errTooLarge):
		return err.Error() + "; is this the right file?"
	case errors.As(err, &pe):
		return "cannot read: " + pe.Err.Error()
	}
	return "cannot read: " + err.Error()
}
