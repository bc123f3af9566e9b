package config

import (
	"fmt"
	"strings"
)

// FieldError is one problem found in a configuration, tied to the field it
// concerns.
type FieldError struct {
	// Path names the field in YAML terms, such as "guacamole.timeout" or
	// "identities[1].password_file". It is empty for problems that concern the
	// document as a whole.
	Path string

	// Msg says what is wrong. It never contains a secret value.
	Msg string

	// Err is the underlying error, if any, so that callers can use errors.Is
	// (for example with fs.ErrNotExist when the config file is missing).
	Err error
}

// Error returns "path: message", or just the message when Path is empty.
func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Unwrap returns the underlying error, which may be nil.
func (e FieldError) Unwrap() error { return e.Err }

// Errors lists every problem found in a configuration. Load, Parse and
// Validate return it rather than stopping at the first problem, so that an
// operator can fix them all in one go.
type Errors []FieldError

// Error returns one problem per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns each problem as an error, so that errors.Is and errors.As
// look at all of them.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// add records a problem at path.
func (es *Errors) add(path, format string, args ...any) {
	*es = append(*es, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// err returns es as an error, or a true nil when there is nothing to report.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// covers reports whether a problem at path is already explained by the
// problem at p, because path is p itself or lies inside it. A field that could
// not be decoded is left at its default, and validating that default would
// only add noise.
func covers(p, path string) bool {
	if p == "" || p == path {
		return true
	}
	rest, ok := strings.CutPrefix(path, p)
	return ok && (rest[0] == '.' || rest[0] == '[')
}
