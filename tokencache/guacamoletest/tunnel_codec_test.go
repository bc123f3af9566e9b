package guacamoletest

import (
	"net/url"
	"regexp"
	"slices"
	"testing"
)

func TestInstructionEncoding(t *testing.T) {
	tests := []struct {
		elements []string
		want     string
	}{
		{[]string{"sync", "1234"}, "4.sync,4.1234;"},
		{[]string{"nop"}, "3.nop;"},
		{[]string{"", "ping", "17"}, "0.,4.ping,2.17;"},
		{[]string{"name", "héllo€"}, "4.name,6.héllo€;"}, // code points, not bytes
		{[]string{"blob", "🙂", ""}, "4.blob,1.🙂,0.;"},    // outside the BMP: one code point
		{[]string{"key", "a,b;c.d"}, "3.key,7.a,b;c.d;"}, // separators inside an element
	}
	for _, tt := range tests {
		if got := instruction(tt.elements...); got != tt.want {
			t.Errorf("instruction(%q) = %q; want %q", tt.elements, got, tt.want)
		}
	}
}

func TestParseInstructions(t *testing.T) {
	tests := []struct {
		data   string
		want   [][]string
		wantOK bool
	}{
		{"", nil, true},
		{"4.sync,4.1234;", [][]string{{"sync", "1234"}}, true},
		{"3.nop;0.,4.ping,2.17;", [][]string{{"nop"}, {"", "ping", "17"}}, true},
		{"4.name,6.héllo€;", [][]string{{"name", "héllo€"}}, true},
		{"3.key,7.a,b;c.d;", [][]string{{"key", "a,b;c.d"}}, true},
		{"4.sync,4.1234", nil, false},  // no terminator
		{"4.sync,5.1234;", nil, false}, // length past the end
		{"4.sync,3.1234;", nil, false}, // wrong terminator after the element
		{"x.sync;", nil, false},        // length is not a number
		{".sync;", nil, false},         // no length
		{"-1.a;", nil, false},          // negative length
		{"3.nop;4.sy", nil, false},     // a complete instruction, then garbage
		{"1.\xff;", nil, false},        // not UTF-8
	}
	for _, tt := range tests {
		got, ok := parseInstructions(tt.data)
		if ok != tt.wantOK || !equalInstructions(got, tt.want) {
			t.Errorf("parseInstructions(%q) = %q, %v; want %q, %v", tt.data, got, ok, tt.want, tt.wantOK)
		}
	}
}

func equalInstructions(a, b [][]string) bool {
	return slices.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

func TestParseTunnelRequest(t *testing.T) {
	base := "GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=c"
	tests := []struct {
		query   string
		wantErr string // empty: the request parses
	}{
		{base + "&token=T", ""},
		{base, ""}, // the token is checked later, against the sessions
		{"GUAC_DATA_SOURCE=default&GUAC_TYPE=c&token=T", `Parameter "GUAC_ID" is required.`},
		{"GUAC_DATA_SOURCE=default&GUAC_ID=1", `Parameter "GUAC_TYPE" is required.`},
		{"GUAC_DATA_SOURCE=default&GUAC_ID=1&GUAC_TYPE=x", "Illegal identifier - unknown type."},
		{"GUAC_ID=1&GUAC_TYPE=c", `Parameter "GUAC_DATA_SOURCE" is required.`},
		{base + "&GUAC_WIDTH=wide", `Parameter "GUAC_WIDTH" must be a valid integer.`},
		{base + "&GUAC_HEIGHT=99999999999", `Parameter "GUAC_HEIGHT" must be a valid integer.`},
		{base + "&GUAC_DPI=9.6", `Parameter "GUAC_DPI" must be a valid integer.`},
		// GUAC_ID is checked before GUAC_TYPE, whatever the order in the query.
		{"GUAC_TYPE=x&GUAC_DATA_SOURCE=default", `Parameter "GUAC_ID" is required.`},
	}
	for _, tt := range tests {
		params, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		_, terr := parseTunnelRequest(params)
		got := ""
		if terr != nil {
			got = terr.msg
			if terr.status != statusBadRequest {
				t.Errorf("%s: got status %+v; want %+v", tt.query, terr.status, statusBadRequest)
			}
		}
		if got != tt.wantErr {
			t.Errorf("%s: got error %q; want %q", tt.query, got, tt.wantErr)
		}
	}
}

func TestParseTunnelRequestKeepsParameters(t *testing.T) {
	params := url.Values{
		"token":            {"first", "second"},
		"GUAC_DATA_SOURCE": {"default"},
		"GUAC_ID":          {"2", "1"},
		"GUAC_TYPE":        {"c"},
		"GUAC_WIDTH":       {"800"},
		"GUAC_HEIGHT":      {"600"},
		"GUAC_AUDIO":       {"audio/L8", "audio/L16"},
	}
	req, terr := parseTunnelRequest(params)
	if terr != nil {
		t.Fatalf("got error %q", terr.msg)
	}
	if req.token != "first" || req.id != "2" || req.width != 800 || req.height != 600 {
		t.Errorf("got token %q, id %q, size %dx%d; want first, 2, 800x600",
			req.token, req.id, req.width, req.height)
	}
	if _, ok := req.params["token"]; ok {
		t.Error("params keep the token")
	}
	if got := req.params["GUAC_AUDIO"]; !slices.Equal(got, []string{"audio/L8", "audio/L16"}) {
		t.Errorf("got GUAC_AUDIO %q; want both values in order", got)
	}
}

func TestNewUUID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := make(map[string]bool)
	for range 100 {
		u := newUUID()
		if !re.MatchString(u) {
			t.Fatalf("newUUID() = %q; want a lower-case version 4 UUID", u)
		}
		if seen[u] {
			t.Fatalf("newUUID() repeated %q", u)
		}
		seen[u] = true
	}
}
