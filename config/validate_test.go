package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// validConfig returns a valid Config built in code, with defaults applied.
func validConfig() *Config {
	c := &Config{
		Guacamole: Guacamole{URL: "http://guac:8080/guacamole"},
		Identities: []Identity{{
			Name:     "tool",
			Username: "svc-tool",
			Password: "pw",
			Default:  true,
		}},
	}
	c.ApplyDefaults()
	return c
}

// validate runs Validate on the result of validConfig after change and
// returns the problems found.
func validate(t *testing.T, change func(c *Config)) (*Config, Errors) {
	t.Helper()
	c := validConfig()
	change(c)
	if err := c.Validate(); err != nil {
		return c, problems(t, err)
	}
	return c, nil
}

func TestValidateCodeBuiltConfig(t *testing.T) {
	key := HashAPIKey("k")
	c, errs := validate(t, func(c *Config) {
		c.Guacamole.URL += "/"
		c.Identities[0].APIKeysSHA256 = []string{strings.ToUpper(key)}
	})
	if errs != nil {
		t.Fatalf("Validate: unexpected problems:\n%v", errs)
	}
	if got, want := c.Guacamole.URL, "http://guac:8080/guacamole"; got != want {
		t.Errorf("URL = %q; want %q", got, want)
	}
	if got := fmt.Sprintf("%x", c.Identities[0].APIKeyHashes); got != "["+key+"]" {
		t.Errorf("APIKeyHashes = %s; want [%s]", got, key)
	}
	if c.Identities[0].Password != "pw" {
		t.Errorf("a password set in code was not kept")
	}
}

func TestValidateLeavesConfigUnchangedOnError(t *testing.T) {
	t.Setenv("GUACPROXY_TEST_PW", "from-env")
	c, errs := validate(t, func(c *Config) {
		c.Guacamole.URL += "/"
		c.Identities[0].Password = ""
		c.Identities[0].PasswordEnv = "GUACPROXY_TEST_PW"
		c.Log.Level = "loud"
	})
	if len(errs) != 1 {
		t.Fatalf("got problems %v; want only log.level", errs)
	}
	if c.Identities[0].Password != "" {
		t.Errorf("Validate filled Password despite failing")
	}
	if !strings.HasSuffix(c.Guacamole.URL, "/") {
		t.Errorf("Validate trimmed the URL despite failing: %q", c.Guacamole.URL)
	}
}

func TestValidateWithoutDefaults(t *testing.T) {
	c := &Config{}
	got := paths(problems(t, c.Validate()))
	want := []string{
		"listen", "admin_listen", "guacamole.url", "guacamole.timeout",
		"guacamole.request_timeout", "guacamole.ban.max_failures", "guacamole.ban.window",
		"guacamole.session_timeout", "tokens.max_lifetime",
		"log.level", "log.format", "identities",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got paths %q; want %q", got, want)
	}
}

func TestPasswordFile(t *testing.T) {
	tests := []struct {
		name    string
		content *string // nil: no file at all
		dir     bool
		want    string
		wantMsg string
	}{
		{name: "plain", content: ptr("s3cret"), want: "s3cret"},
		{name: "newline", content: ptr("s3cret\n"), want: "s3cret"},
		{name: "crlf", content: ptr("s3cret\r\n"), want: "s3cret"},
		{name: "only one newline trimmed", content: ptr("s3cret\n\n"), want: "s3cret\n"},
		{name: "spaces kept", content: ptr(" s3cret \n"), want: " s3cret "},
		{name: "empty", content: ptr(""), wantMsg: "file is empty"},
		{name: "just a newline", content: ptr("\n"), wantMsg: "file is empty"},
		{name: "missing", wantMsg: "no such file"},
		{name: "directory", dir: true, wantMsg: "cannot read: is a directory"},
		{
			name:    "too large",
			content: ptr(strings.Repeat("x", maxPasswordFile+1)),
			wantMsg: "file too large: more than 64 KiB; is this the right file?",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "pw")
			switch {
			case tt.dir:
				file = t.TempDir()
			case tt.content != nil:
				file = writeFile(t, "pw", *tt.content)
			}
			c, errs := validate(t, func(c *Config) {
				c.Identities[0].Password = ""
				c.Identities[0].PasswordFile = file
			})

			if tt.wantMsg != "" {
				want := Errors{{Path: "identities[0].password_file", Msg: tt.wantMsg}}
				if !slices.Equal(errs, want) {
					t.Errorf("got problems %v; want %v", errs, want)
				}
				return
			}
			if errs != nil {
				t.Fatalf("unexpected problems: %v", errs)
			}
			if got := c.Identities[0].Password; got != tt.want {
				t.Errorf("Password = %q; want %q", got, tt.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestPasswordEnv(t *testing.T) {
	tests := []struct {
		name    string
		set     bool
		value   string
		wantMsg string
	}{
		{name: "set", set: true, value: "s3cret"},
		{name: "unset", wantMsg: `environment variable "GUACPROXY_PW_UNDER_TEST" is not set`},
		{name: "empty", set: true,
			wantMsg: `environment variable "GUACPROXY_PW_UNDER_TEST" is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const name = "GUACPROXY_PW_UNDER_TEST"
			t.Setenv(name, tt.value) // restores the variable afterwards
			if !tt.set {
				os.Unsetenv(name)
			}
			c, errs := validate(t, func(c *Config) {
				c.Identities[0].Password = ""
				c.Identities[0].PasswordEnv = name
			})

			if tt.wantMsg != "" {
				want := Errors{{Path: "identities[0].password_env", Msg: tt.wantMsg}}
				if !slices.Equal(errs, want) {
					t.Errorf("got problems %v; want %v", errs, want)
				}
				return
			}
			if errs != nil {
				t.Fatalf("unexpected problems: %v", errs)
			}
			if got := c.Identities[0].Password; got != tt.value {
				t.Errorf("Password = %q; want %q", got, tt.value)
			}
		})
	}
}

func TestSecretsNeverInMessages(t *testing.T) {
	const secret = "Zq8-distinctive-secret-Zq8"
	t.Setenv("GUACPROXY_SECRET_PW", secret)
	file := writeFile(t, "pw", secret+"\n")

	// Each document is invalid somewhere, and holds the secret somewhere:
	// resolved from a file or the environment, or misplaced in the file.
	docs := []string{
		fmt.Sprintf(`
guacamole: {url: "http://svc:%[1]s@guac/guacamole"}
identities:
  - {name: a, username: u, password_file: %[2]s, api_keys_sha256: [%[1]s]}
  - {name: b, username: u, password_env: GUACPROXY_SECRET_PW, default: yes}
  - {name: c, username: u, password: %[1]s, default: true}
`, secret, file),
		fmt.Sprintf(`
listen: localhost
guacamole: {url: "http://guac/guacamole?token=%[1]s"}
identities:
  - {name: a, username: u, password_file: %[2]s, default: [%[1]s]}
  - {name: b, username: u, password_env: GUACPROXY_SECRET_PW, api_keys_sha256: %[1]s}
`, secret, file),
		fmt.Sprintf(`
guacamole: {url: "%[1]s"}
identities:
  - {name: a, username: u, password_file: %[2]s, default: %[1]s}
`, secret, file),
	}
	for i, doc := range docs {
		_, err := Parse([]byte(doc))
		if err == nil {
			t.Fatalf("document %d: Parse succeeded; want problems", i)
		}
		if msg := err.Error(); strings.Contains(msg, secret) {
			t.Errorf("document %d: the secret appears in\n%s", i, msg)
		}
	}

	// Nor may printing a valid, resolved configuration show it.
	c := mustParse(t, fmt.Sprintf(`
guacamole: {url: http://guac}
identities:
  - {name: a, username: u, password_file: %s, default: true}
  - {name: b, username: u, password_env: GUACPROXY_SECRET_PW, api_keys_sha256: [%s]}
`, file, HashAPIKey("k")))
	for _, verb := range []string{"%v", "%+v", "%#v"} {
		if s := fmt.Sprintf(verb, c); strings.Contains(s, secret) {
			t.Errorf("Sprintf(%q) shows the secret: %s", verb, s)
		}
	}
}

func TestGuacamoleURL(t *testing.T) {
	const notAbsolute = "must be an absolute http:// or https:// URL"
	tests := []struct {
		url     string
		want    string   // the URL kept, when valid
		wantMsg []string // the problems, when not
	}{
		{url: "http://guac:8080/guacamole", want: "http://guac:8080/guacamole"},
		{url: "https://guac/guacamole//", want: "https://guac/guacamole"},
		{url: "http://guac", want: "http://guac"},
		{url: "http://guac/", want: "http://guac"},
		{url: "HTTP://guac/", want: "HTTP://guac"},
		{url: "http://[::1]:8080/g", want: "http://[::1]:8080/g"},
		{url: "", wantMsg: []string{"required"}},
		{url: "guac:8080/guacamole", wantMsg: []string{notAbsolute}},
		{url: "/guacamole", wantMsg: []string{notAbsolute}},
		{url: "ftp://guac/", wantMsg: []string{notAbsolute}},
		{url: "http://guac:port/", wantMsg: []string{"is not a valid URL"}},
		{url: "http:///guacamole", wantMsg: []string{"must include a host"}},
		{url: "http:guac", wantMsg: []string{"must include a host"}},
		{url: "http://u:p@guac/", wantMsg: []string{"must not include a user name or password"}},
		{url: "http://guac/g?", wantMsg: []string{"must not include a query"}},
		{url: "http://guac/g#x", wantMsg: []string{"must not include a fragment"}},
		{url: "http://guac/g?a=1#x", wantMsg: []string{
			"must not include a query", "must not include a fragment"}},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			c, errs := validate(t, func(c *Config) { c.Guacamole.URL = tt.url })
			var got []string
			for _, e := range errs {
				if e.Path != "guacamole.url" {
					t.Errorf("unexpected problem %v", e)
				}
				got = append(got, e.Msg)
			}
			if !slices.Equal(got, tt.wantMsg) {
				t.Errorf("got problems %q; want %q", got, tt.wantMsg)
			}
			if errs == nil && c.Guacamole.URL != tt.want {
				t.Errorf("URL = %q; want %q", c.Guacamole.URL, tt.want)
			}
		})
	}
}

// writeCert writes a self-signed certificate in PEM to a new file.
func writeCert(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "guacproxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{
		Type: "CERTIFICATE", Bytes: der,
	})))
}

func TestCAFile(t *testing.T) {
	cert := writeCert(t)
	tests := []struct {
		name    string
		url     string
		file    string
		wantMsg string
	}{
		{name: "https", url: "https://guac", file: cert},
		{name: "http", url: "http://guac", file: cert,
			wantMsg: "only used with https, but guacamole.url is http"},
		{name: "missing", url: "https://guac", file: filepath.Join(t.TempDir(), "x"),
			wantMsg: "no such file"},
		{name: "not PEM", url: "https://guac", file: writeFile(t, "x.pem", "hello\n"),
			wantMsg: "contains no PEM certificate"},
		{name: "bad certificate", url: "https://guac",
			file: writeFile(t, "bad.pem", string(pem.EncodeToMemory(&pem.Block{
				Type: "CERTIFICATE", Bytes: []byte("junk"),
			}))),
			wantMsg: "certificate 1: x509: malformed certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, errs := validate(t, func(c *Config) {
				c.Guacamole.URL = tt.url
				c.Guacamole.CAFile = tt.file
			})
			if tt.wantMsg == "" {
				if errs != nil {
					t.Fatalf("unexpected problems: %v", errs)
				}
				if c.Guacamole.RootCAs == nil {
					t.Errorf("RootCAs = nil; want a pool")
				}
				return
			}
			want := Errors{{Path: "guacamole.ca_file", Msg: tt.wantMsg}}
			if !slices.Equal(errs, want) {
				t.Errorf("got problems %v; want %v", errs, want)
			}
		})
	}
}

func TestListenAddresses(t *testing.T) {
	tests := []struct {
		listen, admin string
		want          []FieldError
	}{
		{listen: "127.0.0.1:8080", admin: "127.0.0.1:9091"},
		{listen: ":8080", admin: "localhost:9091"},
		{listen: "127.0.0.1:0", admin: "127.0.0.1:0"},
		{listen: "[::1]:8080", admin: "[::1]:8081"},
		{listen: "127.0.0.1:8080", admin: "127.0.0.2:8080"},
		{listen: "127.0.0.1:8080", admin: "127.0.0.1:8080",
			want: []FieldError{{Path: "admin_listen", Msg: "must differ from listen"}}},
		{listen: ":8080", admin: "127.0.0.1:8080",
			want: []FieldError{{Path: "admin_listen", Msg: "must differ from listen"}}},
		{listen: "127.0.0.1:8080", admin: "[::]:8080",
			want: []FieldError{{Path: "admin_listen", Msg: "must differ from listen"}}},
		{listen: "127.0.0.1", admin: "127.0.0.1:9091", want: []FieldError{{Path: "listen",
			Msg: `"127.0.0.1" is not host:port, such as "127.0.0.1:8080"`}}},
		{listen: "127.0.0.1:8080", admin: "127.0.0.1:http", want: []FieldError{{
			Path: "admin_listen", Msg: `port "http" must be a number from 0 to 65535`}}},
		{listen: "127.0.0.1:65536", admin: "127.0.0.1:9091", want: []FieldError{{
			Path: "listen", Msg: `port "65536" must be a number from 0 to 65535`}}},
	}
	for _, tt := range tests {
		t.Run(tt.listen+" "+tt.admin, func(t *testing.T) {
			_, errs := validate(t, func(c *Config) {
				c.Listen, c.AdminListen = tt.listen, tt.admin
			})
			if !slices.Equal(errs, Errors(tt.want)) {
				t.Errorf("got problems %v; want %v", errs, Errors(tt.want))
			}
		})
	}
}

func TestDurations(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []FieldError
	}{
		{name: "session timeout 3m", change: func(c *Config) {
			c.Guacamole.SessionTimeout = 3 * time.Minute
		}},
		{name: "session timeout 2m", change: func(c *Config) {
			c.Guacamole.SessionTimeout = 2 * time.Minute
		}, want: []FieldError{{Path: "guacamole.session_timeout", Msg: "must be at least 3m, " +
			"since guacproxy drops tokens at least 2m before Guacamole would; got 2m"}}},
		{name: "session timeout not whole minutes", change: func(c *Config) {
			c.Guacamole.SessionTimeout = time.Hour + 30*time.Second
		}, want: []FieldError{{Path: "guacamole.session_timeout", Msg: "must be whole " +
			"minutes, as Guacamole's api-session-timeout is; got 1h0m30s"}}},
		{name: "negative timeout", change: func(c *Config) {
			c.Guacamole.Timeout = -time.Second
		}, want: []FieldError{{Path: "guacamole.timeout", Msg: "must be greater than zero"}}},
		{name: "zero max lifetime", change: func(c *Config) {
			c.Tokens.MaxLifetime = 0
		}, want: []FieldError{{Path: "tokens.max_lifetime", Msg: "must be greater than zero"}}},
		{name: "zero shutdown grace", change: func(c *Config) {
			c.ShutdownGrace = 0
		}},
		{name: "negative shutdown grace", change: func(c *Config) {
			c.ShutdownGrace = -time.Second
		}, want: []FieldError{{Path: "shutdown_grace", Msg: "must not be negative"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := validate(t, tt.change)
			if !slices.Equal(errs, Errors(tt.want)) {
				t.Errorf("got problems %v; want %v", errs, Errors(tt.want))
			}
		})
	}
}

func TestIdentityRules(t *testing.T) {
	keyA, keyB := HashAPIKey("a"), HashAPIKey("b")
	id := func(name string, keys ...string) Identity {
		return Identity{Name: name, Username: "svc", Password: "pw", APIKeysSHA256: keys}
	}
	tests := []struct {
		name string
		ids  []Identity
		want []FieldError
	}{
		{name: "keys only", ids: []Identity{id("a", keyA), id("b", keyB)}},
		{name: "name with dots and dashes", ids: []Identity{id("0.a_b-c", keyA)}},
		{name: "upper-case name", ids: []Identity{id("Tool", keyA)}, want: []FieldError{{
			Path: "identities[0].name", Msg: "must be lower-case letters, digits, '.', '_' " +
				`and '-', starting with a letter or digit; got "Tool"`}}},
		{name: "leading dash", ids: []Identity{id("-a", keyA)}, want: []FieldError{{
			Path: "identities[0].name", Msg: "must be lower-case letters, digits, '.', '_' " +
				`and '-', starting with a letter or digit; got "-a"`}}},
		{name: "duplicate name", ids: []Identity{id("a", keyA), id("a", keyB)},
			want: []FieldError{{Path: "identities[1].name",
				Msg: `"a" is already used by identities[0]`}}},
		{name: "key reused in another identity", ids: []Identity{id("a", keyA),
			id("b", keyB, strings.ToUpper(keyA))},
			want: []FieldError{{Path: "identities[1].api_keys_sha256[1]",
				Msg: "same key as identities[0].api_keys_sha256[0]"}}},
		{name: "key too short", ids: []Identity{id("a", keyA[:62])},
			want: []FieldError{{Path: "identities[0].api_keys_sha256[0]",
				Msg: "must be 64 hexadecimal characters, " +
					"the SHA-256 of the API key (not the key itself)"}}},
		{name: "no key, not default", ids: []Identity{id("a", keyA), id("b")},
			want: []FieldError{{Path: "identities[1]",
				Msg: "needs a matcher (api_keys_sha256, client_cert, header or " +
					"source_cidrs) or default: true, or no request could ever use it"}}},
		{name: "no username", ids: []Identity{{Name: "a", Password: "pw", Default: true}},
			want: []FieldError{{Path: "identities[0].username", Msg: "required"}}},
		{name: "no password source", ids: []Identity{{Name: "a", Username: "u", Default: true}},
			want: []FieldError{{Path: "identities[0]",
				Msg: "one of password_file or password_env is required"}}},
		{name: "two defaults", ids: func() []Identity {
			ids := []Identity{id("a"), id("b", keyA), id("c")}
			ids[0].Default, ids[2].Default = true, true
			return ids
		}(), want: []FieldError{{Path: "identities", Msg: "only one identity may have " +
			"default: true; found identities[0], identities[2]"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := validate(t, func(c *Config) { c.Identities = tt.ids })
			if !slices.Equal(errs, Errors(tt.want)) {
				t.Errorf("got problems\n%v\nwant\n%v", errs, Errors(tt.want))
			}
		})
	}
}

// TestDecodeProblemsHideDependentRules checks that a field that failed to
// decode does not also trip rules that compare it with another field.
func TestDecodeProblemsHideDependentRules(t *testing.T) {
	setPassword(t)
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "listen undecodable, admin_listen equal to its default",
			yaml: "listen: [x]\nadmin_listen: 127.0.0.1:8080\n" +
				"guacamole: {url: http://g}\n" + testIdentities,
			want: []string{"listen"},
		},
		{
			name: "default undecodable, no keys",
			yaml: "guacamole: {url: http://g}\n" + testIdentities +
				"  - {name: b, username: u, password_env: GUACPROXY_TEST_PW, default: maybe}\n",
			want: []string{"identities[1].default"},
		},
		{
			name: "password_file undecodable",
			yaml: "guacamole: {url: http://g}\n" +
				"identities: [{name: b, username: u, password_file: [x], default: true}]\n",
			want: []string{"identities[0].password_file"},
		},
		{
			name: "url undecodable, ca_file set",
			yaml: "guacamole: {url: [x], ca_file: " + writeCert(t) + "}\n" + testIdentities,
			want: []string{"guacamole.url"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if got := paths(problems(t, err)); !slices.Equal(got, tt.want) {
				t.Errorf("got paths %q; want %q\n%v", got, tt.want, err)
			}
		})
	}
}
