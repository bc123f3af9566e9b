package guacamoletest

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// Error types that Guacamole reports in the type field of an APIError.
const (
	TypeBadRequest              = "BAD_REQUEST"
	TypeInvalidCredentials      = "INVALID_CREDENTIALS" //nolint:gosec // an error type, not a credential
	TypeInsufficientCredentials = "INSUFFICIENT_CREDENTIALS"
	TypeInternalError           = "INTERNAL_ERROR"
	TypeNotFound                = "NOT_FOUND"
	TypePermissionDenied        = "PERMISSION_DENIED"
	TypeStreamError             = "STREAM_ERROR"
)

// untranslatedKey is the translation key Guacamole attaches to messages
// that have no translation of their own.
const untranslatedKey = "APP.TEXT_UNTRANSLATED"

// APIError is the JSON body of every Guacamole REST error. Its fields are
// declared in the order Guacamole serializes them, so encoding an APIError
// with encoding/json yields the same bytes Guacamole sends; nil fields are
// sent as null.
type APIError struct {
	Message             string              `json:"message"`
	TranslatableMessage TranslatableMessage `json:"translatableMessage"`
	// StatusCode is the Guacamole protocol status; only STREAM_ERROR sets it.
	StatusCode *int `json:"statusCode"`
	// Expected lists the login fields Guacamole asks for after a credentials
	// failure, and is nil otherwise.
	Expected []Field `json:"expected"`
	// Patches holds per-operation outcomes of a failed JSON Patch request.
	// The emulator never sets it.
	Patches []json.RawMessage `json:"patches"`
	Type    string            `json:"type"`
}

// TranslatableMessage is the translation key and variables Guacamole sends
// beside an error message for its web UI to localize.
type TranslatableMessage struct {
	Key string `json:"key"`
	// Variables is nil for translated messages; untranslated ones carry the
	// raw text under "MESSAGE".
	Variables map[string]string `json:"variables"`
}

// Field describes one login form field named in APIError.Expected.
type Field struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// usernamePasswordFields is what Guacamole lists in Expected when a login
// fails without any provider naming a more specific requirement.
var usernamePasswordFields = []Field{
	{Name: "username", Type: "USERNAME"},
	{Name: "password", Type: "PASSWORD"},
}

// untranslated builds an APIError whose message has no translation, as all
// of Guacamole's built-in REST errors are.
func untranslated(typ, msg string) APIError {
	return APIError{
		Message: msg,
		TranslatableMessage: TranslatableMessage{
			Key:       untranslatedKey,
			Variables: map[string]string{"MESSAGE": msg},
		},
		Type: typ,
	}
}

// reply is a fully decided response. Handlers build replies while holding
// the server lock and write them only after releasing it, so a slow client
// never blocks other requests.
type reply struct {
	status      int
	contentType string
	allow       string
	body        []byte
}

// write sends rep to w. HEAD responses keep their headers but drop the body.
func (rep reply) write(w http.ResponseWriter, r *http.Request) {
	if rep.contentType != "" {
		w.Header().Set("Content-Type", rep.contentType)
	}
	if rep.allow != "" {
		w.Header().Set("Allow", rep.allow)
	}
	w.WriteHeader(rep.status)
	if r.Method != http.MethodHead && len(rep.body) > 0 {
		_, _ = w.Write(rep.body)
	}
}

// jsonReply encodes v the way Guacamole's JSON provider does: no HTML
// escaping and no trailing newline.
func jsonReply(status int, v any) reply {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Every value passed here is built by this package from plain
		// strings, maps and slices, so encoding cannot fail.
		panic("guacamoletest: encode reply: " + err.Error())
	}
	return reply{
		status:      status,
		contentType: "application/json",
		body:        bytes.TrimSuffix(buf.Bytes(), []byte("\n")),
	}
}

func errorReply(status int, e APIError) reply {
	return jsonReply(status, e)
}

func noContent() reply {
	return reply{status: http.StatusNoContent}
}

// notFound is the answer for paths no Guacamole resource matches.
func notFound() reply {
	return reply{
		status:      http.StatusNotFound,
		contentType: "text/plain; charset=utf-8",
		body:        []byte("404 not found\n"),
	}
}

func methodNotAllowed(allow string) reply {
	return reply{
		status:      http.StatusMethodNotAllowed,
		contentType: "text/plain; charset=utf-8",
		allow:       allow,
		body:        []byte("405 method not allowed\n"),
	}
}

// The errors below are the ones Guacamole itself produces on the paths the
// emulator serves, with Guacamole's exact messages.

// errInvalidToken answers a missing, unknown or expired token.
func errInvalidToken() reply {
	return errorReply(http.StatusForbidden,
		untranslated(TypePermissionDenied, "Permission Denied."))
}

// errObjectDenied answers a valid token that may not see an object. Unlike
// errInvalidToken it leaves the session alone.
func errObjectDenied() reply {
	return errorReply(http.StatusForbidden,
		untranslated(TypePermissionDenied, "Permission denied."))
}

// errBadLogin answers a wrong or missing username or password when no
// provider said anything more specific, as with user-mapping.xml.
func errBadLogin() reply {
	e := untranslated(TypeInvalidCredentials, "Permission Denied.")
	e.Expected = usernamePasswordFields
	return errorReply(http.StatusForbidden, e)
}

// errBanned answers a login from a banned address. The ban extension's
// message is translatable, so it carries its own key and no variables.
func errBanned() reply {
	return errorReply(http.StatusTooManyRequests, APIError{
		Message: "Too many failed authentication attempts.",
		TranslatableMessage: TranslatableMessage{
			Key: "LOGIN.ERROR_TOO_MANY_ATTEMPTS",
		},
		Type: TypeBadRequest,
	})
}

func errNoSuchToken() reply {
	return errorReply(http.StatusNotFound,
		untranslated(TypeNotFound, "No such token."))
}

func errUnknownDataSource(ds string) reply {
	msg := `Session not associated with authentication provider "` + ds + `".`
	return errorReply(http.StatusNotFound, untranslated(TypeNotFound, msg))
}

func errObjectNotFound(id string) reply {
	return errorReply(http.StatusNotFound,
		untranslated(TypeNotFound, `Not found: "`+id+`"`))
}

// errInternal is what Guacamole answers for any failure that is not one of
// its own exceptions, such as a login posted with the wrong content type.
func errInternal() reply {
	return errorReply(http.StatusInternalServerError,
		untranslated(TypeInternalError, "Unexpected internal error"))
}

func errBadRequest(msg string) reply {
	return errorReply(http.StatusBadRequest, untranslated(TypeBadRequest, msg))
}
