package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/tokencache"
)

var (
	errUnidentified = errors.New("caller not identified")
	errBlocked      = errors.New("request blocked")
)

// loginError is a failure to get a token for an identity.
type loginError struct {
	identity string
	err      error
}

func (e *loginError) Error() string {
	return fmt.Sprintf("token for identity %q: %v", e.identity, e.err)
}

func (e *loginError) Unwrap() error { return e.err }

// blockedError is a request guacproxy refuses to forward.
type blockedError struct{ msg string }

func (e *blockedError) Error() string { return e.msg }
func (e *blockedError) Unwrap() error { return errBlocked }

// apiError is Guacamole's JSON error body. The field order is Guacamole's.
type apiError struct {
	Message             string       `json:"message"`
	TranslatableMessage translatable `json:"translatableMessage"`
	StatusCode          *int         `json:"statusCode"`
	Expected            any          `json:"expected"`
	Patches             any          `json:"patches"`
	Type                string       `json:"type"`
}

type translatable struct {
	Key       string            `json:"key"`
	Variables map[string]string `json:"variables"`
}

// response is what the client is told about an error: kept apart from the
// error itself, which is logged and may carry internals.
type response struct {
	status     int
	typ        string // Guacamole's error type
	message    string
	retryAfter time.Duration
}

// describe maps an error onto the response the client gets. It is the one
// place that decides statuses for errors made by guacproxy.
func describe(err error) response {
	var (
		le *loginError
		be *blockedError
		bo *tokencache.BackoffError
		de *deniedError
	)
	switch {
	case errors.As(err, &de):
		return response{status: http.StatusForbidden, typ: "PERMISSION_DENIED", message: de.Error() + "."}
	case errors.Is(err, errBadLogin):
		return response{status: http.StatusBadRequest, typ: "BAD_REQUEST",
			message: "A login must be an application/x-www-form-urlencoded form."}
	case errors.Is(err, errLoginRefused):
		// Guacamole's own answer to credentials it does not accept.
		return response{status: http.StatusForbidden, typ: "INVALID_CREDENTIALS",
			message: "Permission Denied."}
	case errors.Is(err, errBadToken):
		return response{status: http.StatusForbidden, typ: "PERMISSION_DENIED",
			message: "Permission Denied."}
	case errors.Is(err, errOtherTunnel):
		return response{status: http.StatusForbidden, typ: "PERMISSION_DENIED",
			message: "The tunnel was opened by another identity than the caller's."}
	case errors.Is(err, errOtherPhantom):
		return response{status: http.StatusForbidden, typ: "PERMISSION_DENIED",
			message: "The token was issued to another identity than the caller's."}
	case errors.Is(err, errNoSuchToken):
		return response{status: http.StatusNotFound, typ: "NOT_FOUND", message: "No such token."}
	case errors.Is(err, errUnidentified):
		return response{status: http.StatusUnauthorized, typ: "PERMISSION_DENIED",
			message: "guacproxy could not identify the caller: send Authorization: Bearer <api key>."}
	case errors.Is(err, errConnectTooLarge):
		return response{status: http.StatusRequestEntityTooLarge, typ: "BAD_REQUEST",
			message: "The tunnel connect request is too large."}
	case errors.As(err, &be):
		return response{status: http.StatusForbidden, typ: "PERMISSION_DENIED", message: be.msg}
	case errors.As(err, &bo) && bo.RetryAfter == 0:
		return response{status: http.StatusServiceUnavailable, typ: "INTERNAL_ERROR",
			message: fmt.Sprintf("guacproxy stopped logging in as identity %q until its configuration changes: %s",
				bo.Identity, loginReason(bo.Cause))}
	case errors.As(err, &bo):
		return response{status: http.StatusServiceUnavailable, typ: "INTERNAL_ERROR",
			retryAfter: bo.RetryAfter,
			message: fmt.Sprintf("guacproxy is not logging in as identity %q for another %s: %s",
				bo.Identity, bo.RetryAfter.Round(time.Second), loginReason(bo.Cause))}
	case errors.As(err, &le):
		if isTimeout(le.err) {
			return response{status: http.StatusGatewayTimeout, typ: "INTERNAL_ERROR",
				message: fmt.Sprintf("guacproxy could not log in as identity %q: Guacamole did not answer in time.", le.identity)}
		}
		return response{status: http.StatusBadGateway, typ: "INTERNAL_ERROR",
			message: fmt.Sprintf("guacproxy could not log in as identity %q: %s", le.identity, loginReason(le.err))}
	case isTimeout(err):
		return response{status: http.StatusGatewayTimeout, typ: "INTERNAL_ERROR",
			message: "Guacamole did not answer in time."}
	}
	return response{status: http.StatusBadGateway, typ: "INTERNAL_ERROR",
		message: "guacproxy could not reach Guacamole."}
}

// loginReason says in words why a login failed, without internals.
func loginReason(err error) string {
	switch {
	case errors.Is(err, tokencache.ErrLoginsBusy):
		return "guacproxy has as many logins waiting for Guacamole as it may send at once."
	case errors.Is(err, tokencache.ErrBudgetSpent):
		return "guacproxy sent as many failed logins as it may without risking a ban of its address by Guacamole."
	case errors.Is(err, tokencache.ErrInvalidCredentials):
		return "Guacamole rejected its username or password."
	case errors.Is(err, tokencache.ErrSecondFactor):
		return "Guacamole asks for a second factor; exempt the account from TOTP/Duo."
	case errors.Is(err, tokencache.ErrBanned):
		return "Guacamole has banned guacproxy's address after failed logins."
	case isTimeout(err):
		return "Guacamole did not answer in time."
	case errors.Is(err, tokencache.ErrUnavailable):
		return "Guacamole failed to answer the login."
	}
	return "guacproxy could not reach Guacamole."
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// writeError answers r with err. REST paths get Guacamole's JSON error body;
// tunnel paths get the status headers tunnel clients read. A client that left
// gets nothing.
func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		p.log.Debug("client left", zap.String("method", r.Method),
			zap.String("path", logPath(r)))
		return
	}
	resp := describe(err)
	p.log.Warn("request failed", zap.String("method", r.Method),
		zap.String("path", logPath(r)), zap.Int("status", resp.status), zap.Error(err))

	h := w.Header()
	if resp.retryAfter > 0 {
		secs := int((resp.retryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.Itoa(secs))
	}
	if resp.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="guacproxy"`)
	}
	if isTunnelPath(r.URL.Path) {
		h.Set("Guacamole-Status-Code", strconv.Itoa(tunnelStatus(resp.status)))
		h.Set("Guacamole-Error-Message", resp.message)
		w.WriteHeader(resp.status)
		return
	}

	body, _ := json.Marshal(apiError{
		Message: resp.message,
		TranslatableMessage: translatable{
			Key:       "APP.TEXT_UNTRANSLATED",
			Variables: map[string]string{"MESSAGE": resp.message},
		},
		Type: resp.typ,
	})
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.status)
	_, _ = w.Write(body)
}

// logPath returns the path of r for logs. The query is never logged, since
// tunnel URLs carry tokens there, and a token in the path of a revocation
// is redacted.
func logPath(r *http.Request) string {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/api/tokens/"); ok && rest != "" {
		return "/api/tokens/REDACTED"
	}
	return r.URL.Path
}

func isTunnelPath(path string) bool {
	return strings.HasSuffix(path, "/websocket-tunnel") || strings.HasSuffix(path, "/tunnel")
}

// tunnelStatus maps an HTTP status onto the Guacamole protocol status code
// that tunnel clients expect in Guacamole-Status-Code.
func tunnelStatus(httpStatus int) int {
	switch httpStatus {
	case http.StatusBadRequest:
		return 0x0300 // CLIENT_BAD_REQUEST
	case http.StatusRequestEntityTooLarge:
		return 0x030D // CLIENT_OVERRUN
	case http.StatusUnauthorized:
		return 0x0301 // CLIENT_UNAUTHORIZED
	case http.StatusForbidden:
		return 0x0303 // CLIENT_FORBIDDEN
	case http.StatusServiceUnavailable:
		return 0x0201 // SERVER_BUSY
	case http.StatusGatewayTimeout:
		return 0x0202 // UPSTREAM_TIMEOUT
	case http.StatusBadGateway:
		return 0x0203 // UPSTREAM_ERROR
	}
	return 0x0200 // SERVER_ERROR
}
