package tokencache

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/guacproxy/guacproxy/tokencache/guacamoletest"
)

func TestClientLogin(t *testing.T) {
	tests := []struct {
		name     string
		password string
		banned   bool
		wantErr  error
	}{
		{name: "ok", password: reporting.Password},
		{name: "wrong password", password: "not-the-password", wantErr: ErrInvalidCredentials},
		{name: "banned address", password: reporting.Password, banned: true, wantErr: ErrBanned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			c := NewClient(f.emu.URL, nil)
			if tt.banned {
				for range 5 {
					_, _ = c.Login(context.Background(), reporting.Username, "wrong")
				}
			}

			s, err := c.Login(context.Background(), reporting.Username, tt.password)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Login error = %v; want %v", err, tt.wantErr)
			}
			if err != nil {
				if strings.Contains(err.Error(), tt.password) {
					t.Errorf("error %q contains the password", err)
				}
				return
			}
			if !regexp.MustCompile(`^[0-9A-F]{64}$`).MatchString(s.Token) {
				t.Errorf("token is not 64 upper-case hex digits")
			}
			if s.Username != reporting.Username || s.DataSource != "default" ||
				len(s.AvailableDataSources) != 1 || s.AvailableDataSources[0] != "default" {
				t.Errorf("session = {%s %s %v}; want {%s default [default]}",
					s.Username, s.DataSource, s.AvailableDataSources, reporting.Username)
			}
		})
	}
}

func TestClientRevokeAndCheck(t *testing.T) {
	f := newFixture(t)
	c := NewClient(f.emu.URL, nil)
	s, err := c.Login(context.Background(), reporting.Username, reporting.Password)
	if err != nil {
		t.Fatal(err)
	}

	if alive, err := c.Check(context.Background(), s.Token); err != nil || !alive {
		t.Fatalf("Check(live token) = %t, %v; want true, nil", alive, err)
	}
	if same, err := c.Reauth(context.Background(), s.Token); err != nil || same.Token != s.Token {
		t.Fatalf("Reauth did not return the same token (err %v)", err)
	}
	if err := c.Revoke(context.Background(), s.Token); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	err = c.Revoke(context.Background(), s.Token)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Revoke = %v; want ErrNotFound", err)
	}
	if strings.Contains(err.Error(), s.Token) {
		t.Errorf("revoke error %q contains the token", err)
	}
	if alive, err := c.Check(context.Background(), s.Token); err != nil || alive {
		t.Fatalf("Check(revoked token) = %t, %v; want false, nil", alive, err)
	}
	if got := f.emu.Stats().FailedLogins; got != 0 {
		t.Errorf("failed logins counted by Guacamole = %d; want 0 (checks must not count)", got)
	}
}

// A Guacamole older than 1.6 has no HEAD /api/session; Check falls back to a
// call every valid token may make.
func TestClientCheckFallsBackBefore16(t *testing.T) {
	emu := guacamoletest.New(guacamoletest.Options{
		Users: map[string]guacamoletest.User{reporting.Username: {Password: reporting.Password}},
	})
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/api/session") {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		emu.ServeHTTP(w, r)
	}))
	t.Cleanup(old.Close)
	c := NewClient(old.URL+"/guacamole", nil)
	s, err := c.Login(context.Background(), reporting.Username, reporting.Password)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		token string
		want  bool
	}{{s.Token, true}, {strings.Repeat("0", 64), false}} {
		if alive, err := c.Check(context.Background(), tt.token); err != nil || alive != tt.want {
			t.Errorf("Check = %t, %v; want %t, nil", alive, err, tt.want)
		}
	}
}

func TestClientNonGuacamoleAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	t.Cleanup(srv.Close)
	_, err := NewClient(srv.URL, nil).Login(context.Background(), "u", "p")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Login = %v; want ErrUnavailable", err)
	}
}
