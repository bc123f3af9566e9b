// Package config loads, defaults and validates guacproxy's YAML
// configuration, and resolves the secrets it points to.
//
// The usual sequence is Load (or Parse), which decodes the file strictly,
// fills in defaults, checks every rule and reports all problems at once as
// Errors. A Config built in code goes through ApplyDefaults and Validate
// instead; the rules are the same.
package config

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"time"
)

// Defaults used by ApplyDefaults and for fields missing from a YAML file.
const (
	DefaultListen         = "127.0.0.1:8080"
	DefaultAdminListen    = "127.0.0.1:9091"
	DefaultTimeout        = 10 * time.Second
	DefaultSessionTimeout = 60 * time.Minute
	DefaultRequestTimeout = 60 * time.Second
	DefaultBanMaxFailures = 4
	DefaultBanWindow      = 5 * time.Minute
	DefaultMaxLifetime    = 12 * time.Hour
	DefaultShutdownGrace  = 30 * time.Second
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "json"
)

// MinSessionTimeout is the smallest accepted guacamole.session_timeout.
// guacproxy drops a cached token a safety margin of at least two minutes
// before Guacamole would expire it, so shorter timeouts leave no useful
// lifetime.
const MinSessionTimeout = 3 * time.Minute

// Config is guacproxy's whole configuration.
type Config struct {
	// Listen is the address tools connect to. Default DefaultListen.
	Listen string `yaml:"listen"`

	// AdminListen is the address of the health and readiness endpoints. It
	// must differ from Listen. Default DefaultAdminListen.
	AdminListen string `yaml:"admin_listen"`

	// Guacamole describes the upstream Guacamole server.
	Guacamole Guacamole `yaml:"guacamole"`

	// Tokens controls the lifetime of cached Guacamole tokens.
	Tokens Tokens `yaml:"tokens"`

	// ShutdownGrace is how long shutdown waits for in-flight requests before
	// revoking every token. Zero means no wait. Default DefaultShutdownGrace
	// (ApplyDefaults treats zero as unset, so set zero after calling it).
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`

	// Log configures logging.
	Log Log `yaml:"log"`

	// TLS, if set, makes guacproxy serve its listen address over TLS and
	// lets identities match by client certificate.
	TLS TLS `yaml:"tls"`

	// TrustedProxies are the CIDRs of front proxies or mesh sidecars whose
	// identity headers guacproxy believes. Header matchers need at least one.
	TrustedProxies []string `yaml:"trusted_proxies"`

	// TrustedProxyNets are the parsed TrustedProxies, filled by Validate.
	TrustedProxyNets []netip.Prefix `yaml:"-" json:"-"`

	// Identities are the service identities guacproxy logs in as. At least
	// one is required. A request is served as the first identity, in this
	// order, that one of its matchers accepts.
	Identities []Identity `yaml:"identities"`
}

// TLS configures inbound TLS on the listen address.
type TLS struct {
	// CertFile and KeyFile are guacproxy's PEM certificate chain and key.
	// Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`

	// ClientCAFile is a PEM bundle of the CAs that sign client
	// certificates. Certificates are verified when presented; client_cert
	// matchers need it.
	ClientCAFile string `yaml:"client_ca_file"`

	// Certificate and ClientCAs are loaded by Validate.
	Certificate *tls.Certificate `yaml:"-" json:"-"`
	ClientCAs   *x509.CertPool   `yaml:"-" json:"-"`
}

// Enabled reports whether guacproxy serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// ClientCertMatch accepts a verified client certificate with any of the
// listed names.
type ClientCertMatch struct {
	// URIs are URI SANs, such as SPIFFE IDs
	// ("spiffe://cluster.local/ns/tools/sa/reporting").
	URIs []string `yaml:"uri"`
	// DNSNames are DNS SANs.
	DNSNames []string `yaml:"dns"`
	// CommonNames are subject common names.
	CommonNames []string `yaml:"cn"`
}

// Empty reports whether the matcher lists no name.
func (m ClientCertMatch) Empty() bool {
	return len(m.URIs) == 0 && len(m.DNSNames) == 0 && len(m.CommonNames) == 0
}

// HeaderMatch accepts a request whose header, set by a trusted front proxy,
// has a given value.
type HeaderMatch struct {
	// Name is the header, such as X-Service-Identity.
	Name string `yaml:"name"`
	// Value is the exact value to accept.
	Value string `yaml:"value"`
	// XFCCURI, instead of Value, accepts an Envoy X-Forwarded-Client-Cert
	// header whose last element has this URI.
	XFCCURI string `yaml:"xfcc_uri"`
}

// Rule allows requests with one of Methods to one of Paths.
type Rule struct {
	// Methods are HTTP methods; empty means any.
	Methods []string `yaml:"methods"`
	// Paths are patterns relative to Guacamole's base URL: "*" stands for
	// one path segment and "**" for any number of them, as in
	// "/api/session/data/*/connections/**".
	Paths []string `yaml:"paths"`
}

// Guacamole describes the upstream Guacamole server.
type Guacamole struct {
	// URL is Guacamole's base URL including its context path, such as
	// "http://127.0.0.1:8081/guacamole". Required. Validate trims a trailing
	// slash.
	URL string `yaml:"url"`

	// CAFile is a PEM bundle of certificates to trust for an https URL. If
	// empty, the system roots are used.
	CAFile string `yaml:"ca_file"`

	// Timeout bounds each login and revoke call. Default DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`

	// RequestTimeout bounds how long a proxied request waits for
	// Guacamole's response headers; a streamed body is not limited. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration `yaml:"request_timeout"`

	// SessionTimeout must match Guacamole's api-session-timeout: the idle
	// time after which Guacamole forgets a token. Whole minutes, at least
	// MinSessionTimeout. Default DefaultSessionTimeout.
	SessionTimeout time.Duration `yaml:"session_timeout"`

	// Ban is guacproxy's failed-login budget, kept below the ban settings
	// of Guacamole's ban extension.
	Ban Ban `yaml:"ban"`

	// RootCAs holds the certificates read from CAFile. Validate fills it; nil
	// means the system roots.
	RootCAs *x509.CertPool `yaml:"-" json:"-"`
}

// Ban is the failed-login budget: across all identities, at most
// MaxFailures logins refused by Guacamole within Window. Guacamole's ban
// extension bans an address after 5 failures in 5 minutes by default, and
// every identity behind guacproxy shares its address.
type Ban struct {
	// MaxFailures must stay below the ban extension's
	// ban-max-invalid-attempts. Default DefaultBanMaxFailures.
	MaxFailures int `yaml:"max_failures"`
	// Window must be at least the ban extension's ban-address-duration.
	// Default DefaultBanWindow.
	Window time.Duration `yaml:"window"`
}

// Tokens controls the lifetime of cached Guacamole tokens.
type Tokens struct {
	// MaxLifetime is the age at which a token is replaced even if it is in
	// constant use. Default DefaultMaxLifetime.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
}

// Log configures logging.
type Log struct {
	// Level is one of debug, info, warn or error. Default DefaultLogLevel.
	Level string `yaml:"level"`

	// Format is json or console. Default DefaultLogFormat.
	Format string `yaml:"format"`

	// Audit writes one line per request (identity, method, path, status,
	// duration, bytes, request id), whatever Level says. Default true
	// (ApplyDefaults treats false as unset, so set false after calling it).
	Audit bool `yaml:"audit"`
}

// Identity is a service identity: a Guacamole account that guacproxy logs in
// as on behalf of the tools that present one of its API keys.
type Identity struct {
	// Name identifies the identity in logs and metrics. Required, unique, and
	// made of lower-case letters, digits, '.', '_' and '-'.
	Name string `yaml:"name"`

	// Username is the Guacamole account. Required.
	Username string `yaml:"username"`

	// PasswordFile is a file holding the account's password; one trailing
	// newline is ignored. Relative paths are resolved against the working
	// directory. Exactly one of PasswordFile and PasswordEnv must be set.
	PasswordFile string `yaml:"password_file"`

	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`

	// APIKeysSHA256 are the hex-encoded SHA-256 hashes of the API keys that
	// select this identity. A caller sends the key itself as
	// "Authorization: Bearer <key>". See HashAPIKey.
	APIKeysSHA256 []string `yaml:"api_keys_sha256"`

	// Default marks the identity used for requests that carry no key of any
	// identity. At most one identity may be the default.
	Default bool `yaml:"default"`

	// ClientCert matches the verified client certificate.
	ClientCert ClientCertMatch `yaml:"client_cert"`

	// Header matches a header set by a trusted proxy.
	Header HeaderMatch `yaml:"header"`

	// SourceCIDRs match the address of the TCP peer.
	SourceCIDRs []string `yaml:"source_cidrs"`

	// SourceNets are the parsed SourceCIDRs, filled by Validate.
	SourceNets []netip.Prefix `yaml:"-" json:"-"`

	// Allow lists what the identity may do. Empty allows everything.
	Allow []Rule `yaml:"allow"`

	// Password is the resolved secret. Validate fills it from PasswordFile or
	// PasswordEnv; it is never read from YAML. A Config built in code may set
	// it directly and leave both sources empty.
	Password string `yaml:"-" json:"-"`

	// APIKeyHashes are the decoded APIKeysSHA256 values, filled by Validate.
	APIKeyHashes [][32]byte `yaml:"-" json:"-"`
}

// String describes the identity without its password, so that printing a
// Config with %v or %+v cannot leak it.
func (id Identity) String() string {
	pw := ""
	if id.Password != "" {
		pw = "REDACTED"
	}
	return fmt.Sprintf("{Name:%s Username:%s PasswordFile:%s PasswordEnv:%s "+
		"APIKeysSHA256:%v Default:%t Password:%s}",
		id.Name, id.Username, id.PasswordFile, id.PasswordEnv,
		id.APIKeysSHA256, id.Default, pw)
}

// GoString is like String, for the %#v verb.
func (id Identity) GoString() string { return "config.Identity" + id.String() }

// HashAPIKey returns the value to list in api_keys_sha256 for key: its
// SHA-256 in lower-case hex.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ApplyDefaults fills every zero field that has a default.
func (c *Config) ApplyDefaults() {
	setDefault(&c.Listen, DefaultListen)
	setDefault(&c.AdminListen, DefaultAdminListen)
	setDefault(&c.Guacamole.Timeout, DefaultTimeout)
	setDefault(&c.Guacamole.SessionTimeout, DefaultSessionTimeout)
	setDefault(&c.Guacamole.RequestTimeout, DefaultRequestTimeout)
	setDefault(&c.Guacamole.Ban.MaxFailures, DefaultBanMaxFailures)
	setDefault(&c.Guacamole.Ban.Window, DefaultBanWindow)
	setDefault(&c.Tokens.MaxLifetime, DefaultMaxLifetime)
	setDefault(&c.ShutdownGrace, DefaultShutdownGrace)
	setDefault(&c.Log.Level, DefaultLogLevel)
	setDefault(&c.Log.Format, DefaultLogFormat)
	setDefault(&c.Log.Audit, true)
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// Load reads the YAML file at path and does what Parse does. On any problem,
// including an unreadable file, it returns Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{Msg: fmt.Sprintf("read config: %v", err), Err: err}}
	}
	return Parse(data)
}

// Parse decodes a YAML document strictly (unknown fields are errors), applies
// defaults, validates the result and resolves its secrets from files and the
// environment. On any problem it returns Errors listing every problem found:
// decoding problems first, in document order, then rule violations.
//
// A field that is absent or null takes its default; a field given explicitly
// keeps its value, so "shutdown_grace: 0s" means no grace period.
func Parse(data []byte) (*Config, error) {
	c := &Config{}
	c.ApplyDefaults()

	root, err := parseDocument(data)
	if err != nil {
		return nil, Errors{{Msg: err.Error(), Err: err}}
	}
	var decodeErrs Errors
	if root != nil {
		decodeErrs = decode(root, c)
	}

	// A field that failed to decode keeps its default, so rule violations
	// involving it would only repeat the decoding problem.
	errs := append(decodeErrs, c.validate().except(decodeErrs)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}
