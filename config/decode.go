package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The YAML is first parsed into a node tree and then walked against the
// Config type by hand. Decoding straight into the struct would stop at the
// first type error and name only a line number; walking the tree lets every
// problem be reported with the path of the field it concerns.

var durationType = reflect.TypeFor[time.Duration]()

// fieldHints explains some unknown fields that are easy mistakes.
var fieldHints = map[string]string{
	"password": "passwords are never read from the config file; " +
		"use password_file or password_env",
	"api_key":  "list SHA-256 hashes of the keys in api_keys_sha256",
	"api_keys": "list SHA-256 hashes of the keys in api_keys_sha256",
}

// parseDocument parses data into a node tree and returns the root of its
// only document, or nil if data holds no document at all.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))

	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, yamlError(err)
	}

	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("the file holds more than one YAML document")
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(err)
	}

	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// yamlError rewords a syntax error from the yaml package.
func yamlError(err error) error {
	return fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
}

// decode stores the values found in root into c, leaving the fields that are
// absent or null untouched, and returns every problem found.
func decode(root *yaml.Node, c *Config) Errors {
	var d decoder
	d.value(root, reflect.ValueOf(c).Elem(), "")
	return d.errs
}

type decoder struct {
	errs Errors
}

// value decodes n into v. Only the kinds that occur in Config are handled.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = deref(n)
	if isNull(n) {
		return
	}
	switch {
	case v.Type() == durationType:
		d.duration(n, v, path)
	case v.Kind() == reflect.String:
		d.string(n, v, path)
	case v.Kind() == reflect.Bool:
		d.bool(n, v, path)
	case v.Kind() == reflect.Int:
		d.int(n, v, path)
	case v.Kind() == reflect.Slice:
		d.list(n, v, path)
	case v.Kind() == reflect.Struct:
		d.object(n, v, path)
	default:
		panic(fmt.Sprintf("config: cannot decode into %s", v.Type()))
	}
}

func (d *decoder) string(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errs.add(path, "expected a string, got %s", describe(n))
		return
	}
	v.SetString(n.Value)
}

func (d *decoder) bool(n *yaml.Node, v reflect.Value, path string) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		d.errs.add(path, "expected true or false, got %s", describe(n))
		return
	}
	v.SetBool(b)
}

func (d *decoder) int(n *yaml.Node, v reflect.Value, path string) {
	var i int
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil {
		d.errs.add(path, "expected a whole number, got %s", describe(n))
		return
	}
	v.SetInt(int64(i))
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errs.add(path, `expected a duration such as "10s", got %s`, describe(n))
		return
	}
	s := strings.TrimSpace(n.Value)
	dur, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			d.errs.add(path, `invalid duration %q: a unit is required, as in "10s"`, s)
		} else {
			d.errs.add(path, "invalid duration %q", s)
		}
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.errs.add(path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) object(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errs.add(path, "expected a mapping, got %s", describe(n))
		return
	}
	for _, f := range d.fields(n, path) {
		p := join(path, f.name)
		i, ok := fieldIndex(v.Type(), f.name)
		if !ok {
			d.errs.add(p, "%s", unknownField(v.Type(), f.name))
			continue
		}
		d.value(f.value, v.Field(i), p)
	}
}

// field is one key and value of a mapping.
type field struct {
	name  string
	value *yaml.Node
}

// fields lists the keys and values of mapping n, including those brought in
// by merge keys ("<<: *anchor"). Keys written in n win over merged ones, and
// among merged mappings the first one listed wins.
func (d *decoder) fields(n *yaml.Node, path string) []field {
	var (
		out     []field
		merges  []*yaml.Node
		seen    = make(map[string]bool)
		visited = map[*yaml.Node]bool{n: true}
	)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), n.Content[i+1]
		switch {
		case isMerge(k):
			merges = append(merges, val)
		case k.Kind != yaml.ScalarNode:
			d.errs.add(path, "field names must be strings, got %s", describe(k))
		case seen[k.Value]:
			d.errs.add(join(path, k.Value), "duplicate field")
		default:
			seen[k.Value] = true
			out = append(out, field{k.Value, val})
		}
	}
	for _, m := range merges {
		out = d.merge(m, path, seen, visited, out)
	}
	return out
}

// merge adds to out the fields of the merge value m that are not in seen.
// visited guards against anchors that refer to themselves.
func (d *decoder) merge(m *yaml.Node, path string, seen map[string]bool,
	visited map[*yaml.Node]bool, out []field) []field {
	m = deref(m)
	items := []*yaml.Node{m}
	if m.Kind == yaml.SequenceNode {
		items = m.Content
	}
	for _, item := range items {
		item = deref(item)
		if item.Kind != yaml.MappingNode {
			d.errs.add(path, `"<<" needs a mapping or a list of mappings, got %s`,
				describe(item))
			continue
		}
		if visited[item] {
			continue
		}
		visited[item] = true

		// The merged mapping's own keys win over those it merges in turn.
		var nested []*yaml.Node
		for i := 0; i+1 < len(item.Content); i += 2 {
			k := deref(item.Content[i])
			switch {
			case isMerge(k):
				nested = append(nested, item.Content[i+1])
			case k.Kind == yaml.ScalarNode && !seen[k.Value]:
				seen[k.Value] = true
				out = append(out, field{k.Value, item.Content[i+1]})
			}
		}
		for _, nm := range nested {
			out = d.merge(nm, path, seen, visited, out)
		}
	}
	return out
}

// isMerge reports whether k is the merge key "<<".
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" &&
		(k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

// fieldIndex returns the index of the field of struct type t that YAML calls
// name.
func fieldIndex(t reflect.Type, name string) (int, bool) {
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == name {
			return i, true
		}
	}
	return 0, false
}

// yamlName returns the YAML name of f, or "" if YAML ignores it.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch {
	case !f.IsExported() || name == "-":
		return ""
	case name == "":
		return strings.ToLower(f.Name)
	}
	return name
}

// unknownField explains why name is not a field of struct type t, with a
// suggestion when the name looks like a misspelt field.
func unknownField(t reflect.Type, name string) string {
	if hint, ok := fieldHints[name]; ok {
		return "unknown field: " + hint
	}
	for i := range t.NumField() {
		known := yamlName(t.Field(i))
		if known != "" && looseName(known) == looseName(name) {
			return fmt.Sprintf("unknown field (did you mean %q?)", known)
		}
	}
	return "unknown field"
}

// looseName folds case and drops separators, so that "adminListen",
// "admin-listen" and "admin_listen" compare equal.
func looseName(s string) string {
	s = strings.ToLower(s)
	return strings.NewReplacer("_", "", "-", "").Replace(s)
}

// deref follows an alias to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// isNull reports whether n stands for no value, which leaves a field as it
// was.
func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 ||
		(n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names the kind of value n holds, for error messages. It never
// quotes the value itself, which might be a misplaced secret.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "a string"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		}
	}
	return "a value of another kind"
}

// join appends a field name to a path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
