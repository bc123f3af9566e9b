package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/proxy/metrics"
	"github.com/guacproxy/guacproxy/tokencache"
)

const (
	// maxReplayBody is the largest request body kept for a replay after a
	// dead token.
	maxReplayBody = 1 << 20
	// maxErrorBody bounds how much of a 403 answer is read to learn its type;
	// Guacamole's error bodies are a few hundred bytes.
	maxErrorBody = 64 << 10
)

// Tokens hands out the Guacamole tokens of identities. *tokencache.Cache
// implements it.
type Tokens interface {
	// Token returns a live token for id, logging in if needed.
	Token(ctx context.Context, id tokencache.Identity) (*tokencache.Token, error)
	// Dead asks Guacamole whether t is dead, in which case the next Token
	// call logs in again.
	Dead(ctx context.Context, t *tokencache.Token) (bool, error)
	// Lease is Token for a tunnel: the token is not revoked until release
	// is called, since revoking a session closes its tunnels.
	Lease(ctx context.Context, id tokencache.Identity) (t *tokencache.Token, release func(), err error)
}

// retryTransport sends proxied requests and, when Guacamole refuses the
// injected token because its session is gone (a Guacamole restart, a
// session revoked behind guacproxy's back), logs in again and sends the
// request once more. A refusal of a token that is still alive is a real
// permission denial and reaches the client unchanged.
type retryTransport struct {
	base   http.RoundTripper
	tokens Tokens
	log    *zap.Logger
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := exchangeFrom(req.Context())
	if c == nil || c.token == nil || c.kind != restCall {
		// Tunnels are checked before they open and cannot be replayed.
		return t.base.RoundTrip(req)
	}
	req, replayable, err := bufferBody(req)
	if err != nil {
		return nil, err
	}

	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		return resp, err
	}
	typ, err := peekErrorType(resp)
	if err != nil || typ != "PERMISSION_DENIED" {
		return resp, err
	}

	dead, err := t.tokens.Dead(req.Context(), c.token)
	if err != nil {
		// Cannot tell: let the client see Guacamole's answer.
		t.log.Warn("token check failed", zap.String("identity", c.identity.Name),
			zap.String("token_fp", c.token.Fingerprint()), zap.Error(err))
		return resp, nil
	}
	if !dead || !replayable {
		return resp, nil
	}

	tok, err := t.tokens.Token(req.Context(), c.identity.Identity)
	if err != nil {
		// The token died and no new one can be had: say why, rather than
		// pass on a refusal the client can do nothing about.
		drain(resp)
		return nil, &loginError{identity: c.identity.Name, err: err}
	}
	retry := req.Clone(req.Context())
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return resp, nil //nolint:nilerr // as above
		}
	}
	retry.Header.Set(tokenHeader, tok.Value())
	drain(resp)

	t.log.Info("replaying request with a new token", zap.String("identity", c.identity.Name),
		zap.String("method", req.Method), zap.String("path", logPath(req)),
		zap.String("token_fp", tok.Fingerprint()))
	c.token = tok
	return t.base.RoundTrip(retry)
}

// timedTransport records how long Guacamole takes to answer.
type timedTransport struct {
	base    http.RoundTripper
	metrics *metrics.Metrics
}

func (t timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	t.metrics.Upstream(time.Since(start))
	return resp, err
}

// bufferBody makes req replayable when its body is small enough: reading at
// most maxReplayBody+1 bytes tells whether it fits without holding more. A
// larger body is streamed on, and the request is not replayed.
func bufferBody(req *http.Request) (*http.Request, bool, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, true, nil
	}
	if req.ContentLength > maxReplayBody {
		return req, false, nil
	}
	head, err := io.ReadAll(io.LimitReader(req.Body, maxReplayBody+1))
	if err != nil {
		return nil, false, err
	}
	out := req.Clone(req.Context())
	if len(head) > maxReplayBody {
		out.Body = readCloser{io.MultiReader(bytes.NewReader(head), req.Body), req.Body}
		return out, false, nil
	}
	_ = req.Body.Close()
	out.Body = io.NopCloser(bytes.NewReader(head))
	out.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(head)), nil
	}
	return out, true, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// peekErrorType reads a small error body to learn Guacamole's error type and
// puts the bytes back for the client.
func peekErrorType(resp *http.Response) (string, error) {
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody+1))
	if err != nil {
		_ = resp.Body.Close()
		return "", err
	}
	if len(head) > maxErrorBody {
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
		return "", nil
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(head))
	var body struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(head, &body)
	return body.Type, nil
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}
