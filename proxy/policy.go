package proxy

import (
	"fmt"
	"slices"
	"strings"
)

// Rule allows requests with one of Methods (any, if empty) to a path that
// matches one of Paths. Paths are relative to Guacamole's base URL; in a
// pattern, "*" stands for one path segment and "**" for any number of them.
type Rule struct {
	Methods []string
	Paths   []string
}

// policy is an identity's compiled allow list; nil allows everything.
type policy []compiledRule

type compiledRule struct {
	methods []string
	paths   [][]string // pattern segments
}

func compilePolicy(rules []Rule) policy {
	if len(rules) == 0 {
		return nil
	}
	p := make(policy, len(rules))
	for i, r := range rules {
		p[i].methods = r.Methods
		for _, pat := range r.Paths {
			p[i].paths = append(p[i].paths, strings.Split(strings.Trim(pat, "/"), "/"))
		}
	}
	return p
}

func (p policy) allows(method, path string) bool {
	if p == nil {
		return true
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for _, r := range p {
		if len(r.methods) > 0 && !slices.Contains(r.methods, method) {
			continue
		}
		for _, pat := range r.paths {
			if matchSegments(pat, segs) {
				return true
			}
		}
	}
	return false
}

// matchSegments matches path segments against pattern segments, where "*"
// matches one segment and "**" any number, including none.
func matchSegments(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := len(segs); i >= 0; i-- {
				if matchSegments(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 || (pat[0] != "*" && pat[0] != segs[0]) {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// deniedError is a request the identity's allow list does not permit.
type deniedError struct {
	identity string
	method   string
	path     string
	rules    int
}

func (e *deniedError) Error() string {
	return fmt.Sprintf("identity %q may not %s %s: none of its %d allow rules permits it",
		e.identity, e.method, e.path, e.rules)
}
