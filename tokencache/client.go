package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Sentinel errors classify what Guacamole answered. Errors returned by
// Client wrap one of them when Guacamole's answer matched, so callers use
// errors.Is to decide what to do.
var (
	// ErrInvalidCredentials means Guacamole rejected the username or
	// password (403 INVALID_CREDENTIALS).
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrSecondFactor means the account needs another factor such as TOTP
	// or Duo (403 INSUFFICIENT_CREDENTIALS); a service account must be
	// exempted from it.
	ErrSecondFactor = errors.New("second factor required")
	// ErrBanned means Guacamole's ban extension refuses logins from this
	// address for now (429).
	ErrBanned = errors.New("address banned by guacamole")
	// ErrNotFound means Guacamole does not know the token or object (404).
	ErrNotFound = errors.New("not found")
	// ErrPermissionDenied means Guacamole refused the token (403
	// PERMISSION_DENIED).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnavailable means Guacamole failed on its side (5xx) or answered
	// something that is not Guacamole's API.
	ErrUnavailable = errors.New("guacamole unavailable")
)

// APIError is an error answer from Guacamole's REST API: the HTTP status and
// the type and message of its JSON error body. Message is Guacamole's text,
// which never contains the credentials or token that were sent.
type APIError struct {
	Status  int
	Type    string
	Message string
}

func (e *APIError) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("guacamole answered %d", e.Status)
	}
	return fmt.Sprintf("guacamole answered %d %s: %s", e.Status, e.Type, e.Message)
}

// Unwrap maps the answer onto one of the sentinel errors.
func (e *APIError) Unwrap() error {
	switch {
	case e.Status == http.StatusTooManyRequests:
		return ErrBanned
	case e.Type == "INVALID_CREDENTIALS":
		return ErrInvalidCredentials
	case e.Type == "INSUFFICIENT_CREDENTIALS":
		return ErrSecondFactor
	case e.Status == http.StatusNotFound:
		return ErrNotFound
	case e.Status == http.StatusForbidden:
		return ErrPermissionDenied
	case e.Status >= 500 || e.Type == "":
		return ErrUnavailable
	}
	return nil
}

// Session is what a successful login returns.
type Session struct {
	Token                string   `json:"authToken"`
	Username             string   `json:"username"`
	DataSource           string   `json:"dataSource"`
	AvailableDataSources []string `json:"availableDataSources"`
}

// Client calls Guacamole's token endpoints. Its methods do not add their own
// deadline: callers bound each call with the context.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a Client for the Guacamole web application at baseURL,
// which includes the context path (for example
// "http://guacamole:8080/guacamole"). If hc is nil, http.DefaultClient is
// used.
func NewClient(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), http: hc}
}

// Login creates a new Guacamole session for username.
func (c *Client) Login(ctx context.Context, username, password string) (*Session, error) {
	form := url.Values{"username": {username}, "password": {password}}
	s, err := c.postTokens(ctx, form)
	if err != nil {
		return nil, fmt.Errorf("login as %q: %w", username, err)
	}
	return s, nil
}

// Reauth posts token back to Guacamole, which answers with the same session
// and resets its idle timer. Guacamole's ban extension counts a re-auth of a
// dead token as a failed login, so Check is the safer way to test a token.
func (c *Client) Reauth(ctx context.Context, token string) (*Session, error) {
	s, err := c.postTokens(ctx, url.Values{"token": {token}})
	if err != nil {
		return nil, fmt.Errorf("re-authenticate: %w", err)
	}
	return s, nil
}

func (c *Client) postTokens(ctx context.Context, form url.Values) (*Session, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/api/tokens",
		strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, scrubURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, readAPIError(resp)
	}

	var s Session
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&s); err != nil {
		return nil, fmt.Errorf("decode login answer: %w", ErrUnavailable)
	}
	if s.Token == "" {
		return nil, fmt.Errorf("login answer has no authToken: %w", ErrUnavailable)
	}
	return &s, nil
}

// Revoke ends the session of token. A token Guacamole no longer knows gives
// an error wrapping ErrNotFound, which callers treat as already revoked.
func (c *Client) Revoke(ctx context.Context, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete,
		c.base+"/api/tokens/"+url.PathEscape(token), nil)
	if err != nil {
		return fmt.Errorf("revoke: %w", scrubURLError(err))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("revoke: %w", scrubURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil
	}
	return fmt.Errorf("revoke: %w", readAPIError(resp))
}

// Check reports whether token still names a live session. It asks
// HEAD /api/session, which Guacamole 1.6 answers without touching the idle
// timer; older versions do not have it, so on 404 or 405 it falls back to
// listing the session's tunnels, a call every valid token may make. Neither
// counts as a failed login for the ban extension.
func (c *Client) Check(ctx context.Context, token string) (bool, error) {
	alive, err := c.checkWith(ctx, http.MethodHead, "/api/session", token)
	var apiErr *APIError
	if errors.As(err, &apiErr) &&
		(apiErr.Status == http.StatusNotFound || apiErr.Status == http.StatusMethodNotAllowed) {
		alive, err = c.checkWith(ctx, http.MethodGet, "/api/session/tunnels", token)
	}
	if err != nil {
		return false, fmt.Errorf("check token: %w", err)
	}
	return alive, nil
}

func (c *Client) checkWith(ctx context.Context, method, path, token string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Guacamole-Token", token)
	resp, err := c.http.Do(req)
	if err != nil {
		return false, scrubURLError(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return true, nil
	case resp.StatusCode == http.StatusForbidden:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return false, nil
	}
	return false, readAPIError(resp)
}

// readAPIError turns a non-success answer into an *APIError, keeping only the
// type and message of Guacamole's JSON body.
func readAPIError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode}
	var body struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if json.Unmarshal(data, &body) == nil {
		e.Type, e.Message = body.Type, body.Message
	}
	return e
}

// scrubURLError drops the URL from a transport error: the revoke URL carries
// the token in its path.
func scrubURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return fmt.Errorf("%s guacamole: %w", strings.ToLower(uerr.Op), uerr.Err)
	}
	return err
}
