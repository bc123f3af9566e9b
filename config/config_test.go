package config

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// testIdentities is a valid identities section; it reads its password from
// GUACPROXY_TEST_PW, which setPassword sets.
const testIdentities = `
identities:
  - name: tool
    username: svc-tool
    password_env: GUACPROXY_TEST_PW
    default: true
`

// setPassword sets the variable testIdentities reads.
func setPassword(t *testing.T) {
	t.Helper()
	t.Setenv("GUACPROXY_TEST_PW", "pw")
}

// writeFile writes content to a new file in a temporary directory and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// problems returns the problems in err, failing the test if err is not
// Errors.
func problems(t *testing.T, err error) Errors {
	t.Helper()
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got error %v (%T); want Errors", err, err)
	}
	return errs
}

// paths returns the path of each problem.
func paths(errs Errors) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Path
	}
	return out
}

// mustParse parses data and fails the test on any problem.
func mustParse(t *testing.T, data string) *Config {
	t.Helper()
	c, err := Parse([]byte(data))
	if err != nil {
		t.Fatalf("Parse: unexpected problems:\n%v", err)
	}
	return c
}

func TestParseAppliesDefaults(t *testing.T) {
	setPassword(t)
	c := mustParse(t, "guacamole:\n  url: http://guac:8080/guacamole/\n"+testIdentities)

	tests := []struct {
		name string
		got  any
		want any
	}{
		{"listen", c.Listen, DefaultListen},
		{"admin_listen", c.AdminListen, DefaultAdminListen},
		{"guacamole.url", c.Guacamole.URL, "http://guac:8080/guacamole"},
		{"guacamole.ca_file", c.Guacamole.CAFile, ""},
		{"guacamole.timeout", c.Guacamole.Timeout, 10 * time.Second},
		{"guacamole.session_timeout", c.Guacamole.SessionTimeout, 60 * time.Minute},
		{"tokens.max_lifetime", c.Tokens.MaxLifetime, 12 * time.Hour},
		{"shutdown_grace", c.ShutdownGrace, 30 * time.Second},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
		{"identities[0].password", c.Identities[0].Password, "pw"},
		{"guacamole.RootCAs is nil", c.Guacamole.RootCAs == nil, true},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v; want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestApplyDefaultsKeepsSetFields(t *testing.T) {
	c := Config{Listen: ":1", ShutdownGrace: time.Second, Log: Log{Level: "debug"}}
	c.ApplyDefaults()
	if c.Listen != ":1" || c.ShutdownGrace != time.Second || c.Log.Level != "debug" {
		t.Errorf("ApplyDefaults overwrote set fields: %+v", c)
	}
	if c.AdminListen != DefaultAdminListen || c.Log.Format != DefaultLogFormat {
		t.Errorf("ApplyDefaults left zero fields: %+v", c)
	}
}

func TestExplicitValuesBeatDefaults(t *testing.T) {
	setPassword(t)
	c := mustParse(t, `
listen:          # null keeps the default
shutdown_grace: 0s
guacamole:
  url: https://guac.example.com
  timeout: 1500ms
  session_timeout: 1h30m
`+testIdentities)

	if c.Listen != DefaultListen {
		t.Errorf("listen = %q; want %q", c.Listen, DefaultListen)
	}
	if c.ShutdownGrace != 0 {
		t.Errorf("shutdown_grace = %v; want 0s", c.ShutdownGrace)
	}
	if c.Guacamole.Timeout != 1500*time.Millisecond {
		t.Errorf("guacamole.timeout = %v; want 1.5s", c.Guacamole.Timeout)
	}
	if c.Guacamole.SessionTimeout != 90*time.Minute {
		t.Errorf("guacamole.session_timeout = %v; want 1h30m", c.Guacamole.SessionTimeout)
	}
}

// exampleFile is the documented example configuration.
const exampleFile = "../deploy/guacproxy.example.yaml"

func TestExampleFileLoads(t *testing.T) {
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	pwFile := writeFile(t, "reporting", "reporting-pw\n")
	text := strings.ReplaceAll(string(data), "/run/secrets/reporting", pwFile)
	if text == string(data) {
		t.Fatal("example no longer refers to /run/secrets/reporting")
	}
	t.Setenv("TOOL_PASSWORD", "tool-pw")

	cfgFile := writeFile(t, "guacproxy.yaml", text)
	c, err := Load(cfgFile)
	if err != nil {
		t.Fatalf("Load: unexpected problems:\n%v", err)
	}

	if got, want := c.Guacamole.URL, "http://127.0.0.1:8081/guacamole"; got != want {
		t.Errorf("guacamole.url = %q; want %q", got, want)
	}
	if len(c.Identities) != 2 {
		t.Fatalf("got %d identities; want 2", len(c.Identities))
	}
	rep, tool := c.Identities[0], c.Identities[1]
	if rep.Password != "reporting-pw" || tool.Password != "tool-pw" {
		t.Errorf("passwords not resolved as expected")
	}
	wantHash := sha256.Sum256([]byte("example-reporting-key-replace-me"))
	if !reflect.DeepEqual(rep.APIKeyHashes, [][32]byte{wantHash}) {
		t.Errorf("reporting APIKeyHashes = %x; want [%x]", rep.APIKeyHashes, wantHash)
	}
	if rep.Default || !tool.Default {
		t.Errorf("default = %t, %t; want false, true", rep.Default, tool.Default)
	}

	// The example spells out every default, so it must match ApplyDefaults.
	var defaults Config
	defaults.ApplyDefaults()
	c.Guacamole.URL, c.Identities = "", nil
	if len(c.TrustedProxies) == 0 {
		c.TrustedProxies = nil // written as [] to document it
	}
	if !reflect.DeepEqual(*c, defaults) {
		t.Errorf("example settings differ from the defaults:\ngot  %+v\nwant %+v", *c, defaults)
	}
}

func TestExampleFileDocumentsEveryField(t *testing.T) {
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range yamlNames(reflect.TypeFor[Config]()) {
		if !strings.Contains(string(data), name+":") {
			t.Errorf("example does not mention %q", name)
		}
	}
}

// yamlNames lists the YAML field names of struct type t and of the structs
// it contains.
func yamlNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		names = append(names, name)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			names = append(names, yamlNames(ft)...)
		}
	}
	return names
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	errs := problems(t, err)
	if len(errs) != 1 || errs[0].Path != "" {
		t.Errorf("got %q; want one problem without a path", paths(errs))
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(err, fs.ErrNotExist) = false; want true")
	}
}

func TestDecodeProblems(t *testing.T) {
	const url = "guacamole: {url: http://g/guacamole}\n"
	tests := []struct {
		name string
		yaml string
		want []FieldError
	}{
		{
			name: "unknown top-level field",
			yaml: url + "colour: blue\n" + testIdentities,
			want: []FieldError{{Path: "colour", Msg: "unknown field"}},
		},
		{
			name: "misspelt field",
			yaml: url + "adminListen: :9\n" + testIdentities,
			want: []FieldError{{Path: "adminListen",
				Msg: `unknown field (did you mean "admin_listen"?)`}},
		},
		{
			name: "unknown nested field",
			yaml: "guacamole: {url: http://g, tiemout: 5s}\n" + testIdentities,
			want: []FieldError{{Path: "guacamole.tiemout", Msg: "unknown field"}},
		},
		{
			name: "password in the file",
			yaml: url + testIdentities + "    password: x\n",
			want: []FieldError{{Path: "identities[0].password", Msg: "unknown field: " +
				"passwords are never read from the config file; " +
				"use password_file or password_env"}},
		},
		{
			name: "bad duration",
			yaml: "guacamole: {url: http://g, timeout: ten}\n" + testIdentities,
			want: []FieldError{{Path: "guacamole.timeout", Msg: `invalid duration "ten"`}},
		},
		{
			name: "duration without unit",
			yaml: url + "shutdown_grace: 30\n" + testIdentities,
			want: []FieldError{{Path: "shutdown_grace",
				Msg: `invalid duration "30": a unit is required, as in "10s"`}},
		},
		{
			name: "duration given as a list",
			yaml: url + "tokens: {max_lifetime: [1h]}\n" + testIdentities,
			want: []FieldError{{Path: "tokens.max_lifetime",
				Msg: `expected a duration such as "10s", got a list`}},
		},
		{
			name: "string given as a mapping",
			yaml: url + "listen: {port: 80}\n" + testIdentities,
			want: []FieldError{{Path: "listen", Msg: "expected a string, got a mapping"}},
		},
		{
			name: "section given as a string",
			yaml: url + "log: debug\n" + testIdentities,
			want: []FieldError{{Path: "log", Msg: "expected a mapping, got a string"}},
		},
		{
			name: "bad boolean",
			yaml: url + testIdentities +
				"  - {name: b, username: u, password_env: GUACPROXY_TEST_PW, default: 2}\n",
			want: []FieldError{{Path: "identities[1].default",
				Msg: "expected true or false, got a number"}},
		},
		{
			name: "list given as a string",
			yaml: url + testIdentities + "    api_keys_sha256: " + strings.Repeat("a", 64) + "\n",
			want: []FieldError{{Path: "identities[0].api_keys_sha256",
				Msg: "expected a list, got a string"}},
		},
		{
			name: "identities not a list",
			yaml: url + "identities: {name: x}\n",
			want: []FieldError{{Path: "identities", Msg: "expected a list, got a mapping"}},
		},
		{
			name: "duplicate field",
			yaml: url + "listen: :1\nlisten: :2\n" + testIdentities,
			want: []FieldError{{Path: "listen", Msg: "duplicate field"}},
		},
		{
			name: "document is a list",
			yaml: "- a\n- b\n",
			want: []FieldError{{Path: "", Msg: "expected a mapping, got a list"}},
		},
		{
			name: "two documents",
			yaml: url + testIdentities + "---\nlisten: :1\n",
			want: []FieldError{{Path: "", Msg: "the file holds more than one YAML document"}},
		},
		{
			name: "syntax error",
			yaml: "listen: [\n",
			want: []FieldError{{Path: "",
				Msg: "invalid YAML: line 1: did not find expected node content"}},
		},
		{
			name: "bad merge",
			yaml: url + "log: {<<: [a]}\n" + testIdentities,
			want: []FieldError{{Path: "log",
				Msg: `"<<" needs a mapping or a list of mappings, got a string`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setPassword(t)
			_, err := Parse([]byte(tt.yaml))
			errs := problems(t, err)
			for i := range errs {
				errs[i].Err = nil
			}
			if !slices.Equal(errs, tt.want) {
				t.Errorf("got problems\n%v\nwant\n%v", errs, Errors(tt.want))
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	t.Setenv("GUACPROXY_TEST_PW", "pw")
	t.Setenv("GUACPROXY_UNSET_PW", "")
	os.Unsetenv("GUACPROXY_UNSET_PW")
	key := strings.Repeat("ab", 32)
	missing := filepath.Join(t.TempDir(), "missing")

	yaml := fmt.Sprintf(`
listen: 127.0.0.1:8080
admin_listen: 0.0.0.0:8080
colour: blue
guacamole:
  url: http://guac/guacamole?x=1
  ca_file: /etc/ssl/guac.pem
  timeout: ten
  session_timeout: 90s
tokens:
  max_lifetime: 0s
shutdown_grace: -1s
log: {level: verbose, format: xml}
identities:
  - name: Bad Name
    password_file: %[1]s
    password_env: GUACPROXY_TEST_PW
  - name: reporting
    username: svc
    password_file: %[1]s
    api_keys_sha256: [%[2]s, not-a-hash]
  - name: reporting
    username: svc2
    password_env: GUACPROXY_UNSET_PW
    api_keys_sha256: [%[3]s]
    default: true
  - name: other
    username: svc3
    password_env: GUACPROXY_TEST_PW
    default: yes please
  - name: last
    username: svc4
    password_env: GUACPROXY_TEST_PW
    default: true
`, missing, key, strings.ToUpper(key))

	_, err := Parse([]byte(yaml))
	got := paths(problems(t, err))
	want := []string{
		// Decoding, in document order.
		"colour",
		"guacamole.timeout",
		"identities[3].default",
		// Rules, in field order.
		"admin_listen",
		"guacamole.url",
		"guacamole.ca_file",
		"guacamole.session_timeout",
		"tokens.max_lifetime",
		"shutdown_grace",
		"log.level",
		"log.format",
		"identities[0].name",
		"identities[0].username",
		"identities[0]",
		"identities[0]",
		"identities[1].password_file",
		"identities[1].api_keys_sha256[1]",
		"identities[2].name",
		"identities[2].password_env",
		"identities[2].api_keys_sha256[0]",
		"identities",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got paths\n%q\nwant\n%q\nfull errors:\n%v", got, want, err)
	}
}

func TestErrorsFormat(t *testing.T) {
	errs := Errors{
		{Path: "identities[1].password_file", Msg: "no such file"},
		{Msg: "the file holds more than one YAML document"},
	}
	want := "identities[1].password_file: no such file\n" +
		"the file holds more than one YAML document"
	if got := errs.Error(); got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
}

func TestMergeKeys(t *testing.T) {
	setPassword(t)
	c := mustParse(t, `
guacamole: {url: http://g}
identities:
  - &base
    name: one
    username: shared
    password_env: GUACPROXY_TEST_PW
    api_keys_sha256: [`+strings.Repeat("1", 64)+`]
  - <<: *base
    name: two
    api_keys_sha256: [`+strings.Repeat("2", 64)+`]
  - &self
    <<: [*self, *base]
    name: three
    api_keys_sha256: [`+strings.Repeat("3", 64)+`]
`)
	for i, want := range []string{"one", "two", "three"} {
		id := c.Identities[i]
		if id.Name != want || id.Username != "shared" || id.Password != "pw" {
			t.Errorf("identities[%d] = %+v; want name %q, username shared", i, id, want)
		}
	}
}

func TestIdentityStringHidesPassword(t *testing.T) {
	id := Identity{Name: "n", Username: "u", Password: "hunter2-distinctive"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		c := Config{Identities: []Identity{id}}
		if got := fmt.Sprintf(verb, c); strings.Contains(got, "hunter2") {
			t.Errorf("Sprintf(%q, config) = %s; contains the password", verb, got)
		}
	}
}

func TestHashAPIKey(t *testing.T) {
	got := HashAPIKey("example-reporting-key-replace-me")
	want := "c84062d87113cea1122a087b2e2fe1e9a71660af39bbaf3f02fdb17f2be4652c"
	if got != want {
		t.Errorf("HashAPIKey = %s; want %s", got, want)
	}
}
