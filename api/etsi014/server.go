package etsi014

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
)

// Service is what a site provides behind the REST interface. master and slave are SAE IDs:
// the caller's comes from its certificate, the other from the URL (already checked with
// pki.CheckID). Errors wrapping the kms sentinels choose the status code (see
// writeServiceError); the text of such an error is sent to the SAE as the Error message, so
// it must name no secret. Other errors are logged and answered with a generic 503.
// The handler zeroes the Bytes of the returned keys once the answer is written.
type Service interface {
	// Status answers Get status (clause 5.2) for master (the caller) and slave.
	Status(ctx context.Context, master, slave string) (*Status, error)
	// GetKey answers Get key (clause 5.3): keys for master (the caller) and slave, plus
	// req.AdditionalSlaveSAEIDs. req is already checked: see KeyRequest.
	GetKey(ctx context.Context, master, slave string, req KeyRequest) ([]DeliveredKey, error)
	// GetKeyWithIDs answers Get key with key IDs (clause 5.4): the keys keyIDs that master
	// obtained for slave (the caller). keyIDs are distinct. requestID is the caller's
	// Idempotency-Key (checked with pki.CheckID), or "": a call repeating an earlier one's
	// requestID and keyIDs gets that call's keys again (see IdempotencyKeyHeader).
	GetKeyWithIDs(ctx context.Context, slave, master string, keyIDs []string, requestID string) ([]DeliveredKey, error)
}

// Options tune the handler. The zero value is usable.
type Options struct {
	// Logger receives unexpected Service errors and request rejections at debug level.
	// Never key material. Default: slog.Default().
	Logger *slog.Logger
	// MaxBodyBytes limits request bodies; larger ones get 400 "request body too large".
	// Default 64 KiB.
	MaxBodyBytes int64
	// MandatoryExtensions names the extension_mandatory parameters the Service honours;
	// any other one is refused with the prescribed 400. Default: none.
	MandatoryExtensions []string
	// OptionalExtensions names the extension_optional parameters passed to the Service;
	// others are dropped and reported. Default: none.
	OptionalExtensions []string
}

// DefaultMaxBodyBytes is the default request body limit: room for about a thousand key IDs.
const DefaultMaxBodyBytes = 64 << 10

// PathPrefix is the common prefix of the standard's URLs (clause 5.1).
const PathPrefix = "/api/v1/keys/"

type handler struct {
	svc       Service
	log       *slog.Logger
	maxBody   int64
	mandatory extensionSet
	optional  extensionSet
}

// NewHandler returns the HTTP handler of the three methods of ETSI GS QKD 014 clause 5,
// to be served over a TLS listener that requires client certificates (pki.ServerConfig).
//
// It routes by hand rather than with http.ServeMux: the mux answers paths holding "." or
// ".." segments with a redirect, while the standard's clients must get a 400 with an Error
// body, and the path ID must be decoded from the escaped path to tell "a%2Fb" from "a/b".
func NewHandler(svc Service, opts Options) http.Handler {
	h := &handler{
		svc:       svc,
		log:       opts.Logger,
		maxBody:   opts.MaxBodyBytes,
		mandatory: extensionSet{},
		optional:  extensionSet{},
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	for _, n := range opts.MandatoryExtensions {
		h.mandatory[n] = true
	}
	for _, n := range opts.OptionalExtensions {
		h.optional[n] = true
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	escaped := r.URL.EscapedPath()
	rest, ok := strings.CutPrefix(escaped, PathPrefix)
	if !ok {
		writeError(w, http.StatusNotFound, &Error{Message: "unknown endpoint; see ETSI GS QKD 014 clause 5 for /api/v1/keys/{SAE_ID}/status, enc_keys and dec_keys"})
		return
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		writeError(w, http.StatusNotFound, &Error{Message: "unknown endpoint"})
		return
	}
	escID, method := rest[:i], rest[i+1:]
	switch method {
	case "status", "enc_keys", "dec_keys":
	default:
		writeError(w, http.StatusNotFound, &Error{Message: "unknown endpoint"})
		return
	}
	allowed := "GET, POST"
	if method == "status" {
		allowed = "GET"
	}
	if r.Method != http.MethodGet && (method == "status" || r.Method != http.MethodPost) {
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, &Error{Message: "method " + r.Method + " not allowed; use " + allowed})
		return
	}

	// Authentication first (clause 4): an unauthenticated caller learns nothing more.
	caller, err := pki.Identify(r.TLS)
	if err != nil || caller.Role != pki.RoleSAE {
		h.log.Debug("etsi014: refused caller", "path", escaped, "role", caller.Role, "err", err)
		writeError(w, http.StatusUnauthorized, &Error{Message: MsgUnauthorizedCertificate})
		return
	}

	// The ID is one URL-encoded path segment (clause 5.1): a raw '/' inside it, dots or
	// control characters would address something else, so they are refused.
	pathID, err := url.PathUnescape(escID)
	if err != nil {
		writeError(w, http.StatusBadRequest, &Error{Message: "SAE_ID in the URL is not validly URL-encoded"})
		return
	}
	if err := pki.CheckID(pathID); err != nil {
		writeError(w, http.StatusBadRequest, &Error{Message: "SAE_ID in the URL: " + strings.TrimPrefix(err.Error(), "pki: ")})
		return
	}

	switch method {
	case "status":
		h.status(w, r, caller.ID, pathID)
	case "enc_keys":
		h.encKeys(w, r, caller.ID, pathID)
	case "dec_keys":
		h.decKeys(w, r, caller.ID, pathID)
	}
}

// status serves Get status (clause 5.2): GET with no parameters.
func (h *handler) status(w http.ResponseWriter, r *http.Request, master, slave string) {
	if r.URL.RawQuery != "" {
		writeError(w, http.StatusBadRequest, &Error{Message: "status takes no parameters"})
		return
	}
	st, err := h.svc.Status(r.Context(), master, slave)
	if err != nil {
		h.writeServiceError(w, r, err)
		return
	}
	body, err := json.Marshal(st)
	if err != nil {
		h.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// encKeys serves Get key (clause 5.3): POST with an optional Key request body, or GET with
// at most the number and size parameters.
func (h *handler) encKeys(w http.ResponseWriter, r *http.Request, master, slave string) {
	var (
		req       KeyRequest
		unhandled []string
		err       error
	)
	if r.Method == http.MethodGet {
		var q url.Values
		if q, err = parseQuery(r); err == nil {
			req, err = decodeKeyRequestQuery(q, slave)
		}
	} else {
		var body []byte
		if body, err = h.readBody(w, r); err == nil {
			req, unhandled, err = decodeKeyRequest(body, slave, h.mandatory, h.optional)
		}
	}
	if err != nil {
		h.writeRequestError(w, r, err, unhandled)
		return
	}
	keys, err := h.svc.GetKey(r.Context(), master, slave, req)
	if err != nil {
		h.writeServiceError(w, r, err)
		return
	}
	var ext map[string]any
	if len(unhandled) > 0 {
		ext = map[string]any{"details": []map[string]any{{
			"message": MsgOptionalNotHandled, "extension_optional": unhandled,
		}}}
	}
	h.writeKeys(w, r, keys, ext)
}

// decKeys serves Get key with key IDs (clause 5.4): POST with a Key IDs body, or GET with
// exactly one key_ID parameter (two or more IDs must be POSTed).
func (h *handler) decKeys(w http.ResponseWriter, r *http.Request, slave, master string) {
	var (
		ids []string
		err error
	)
	if r.Method == http.MethodGet {
		q, qerr := parseQuery(r)
		vals, ok := q["key_ID"]
		switch {
		case qerr != nil:
			err = qerr
		case len(q) != 1 || !ok:
			err = reject("GET dec_keys takes exactly one key_ID parameter")
		case len(vals) != 1:
			err = reject("GET dec_keys takes one key_ID; use POST for two or more")
		default:
			ids, err = vals, checkKeyIDs(vals)
		}
	} else {
		var body []byte
		if body, err = h.readBody(w, r); err == nil {
			ids, err = decodeKeyIDs(body)
		}
	}
	var requestID string
	if err == nil {
		requestID, err = idempotencyKey(r)
	}
	if err != nil {
		h.writeRequestError(w, r, err, nil)
		return
	}
	keys, err := h.svc.GetKeyWithIDs(r.Context(), slave, master, ids, requestID)
	if err != nil {
		h.writeServiceError(w, r, err)
		return
	}
	h.writeKeys(w, r, keys, nil)
}

// IdempotencyKeyHeader names the header with which an SAE makes Get key with key IDs safe to
// retry (draft-ietf-httpapi-idempotency-key-header; an extension of ETSI GS QKD 014, which
// has none). The keys of a dec_keys leave the pool when it is answered, so an SAE that lost
// the answer (a timeout, a reset connection) would otherwise find them "not found" on retry.
// With the header, a retry that repeats the key IDs and the header's value gets the keys of
// the first call, for as long as the KME keeps its answer (qkms: 2 minutes); the same value
// with other key IDs is refused. Values are scoped to the calling SAE.
const IdempotencyKeyHeader = "Idempotency-Key"

// idempotencyKey returns the request's Idempotency-Key, "" when it has none.
func idempotencyKey(r *http.Request) (string, error) {
	id, err := pki.OptionalID(r.Header.Values(IdempotencyKeyHeader))
	if err != nil {
		return "", reject("%s shall be one value of 1 to %d bytes without '/', '\\', '..' or control characters (a UUID will do)", IdempotencyKeyHeader, pki.MaxIDLen)
	}
	return id, nil
}

// parseQuery reads the query strictly: r.URL.Query() drops malformed pairs silently, which
// would let "key_ID=a&%zz" pass as a one-ID request.
func parseQuery(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, reject("malformed query string")
	}
	return q, nil
}

var errBodyTooLarge = &badRequest{msg: MsgBodyTooLarge}

func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > h.maxBody {
		return nil, errBodyTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, errBodyTooLarge
		}
		return nil, reject("could not read the request body")
	}
	return body, nil
}

// writeRequestError answers a request the handler refused before calling the Service.
func (h *handler) writeRequestError(w http.ResponseWriter, r *http.Request, err error, unhandled []string) {
	var br *badRequest
	if !errors.As(err, &br) {
		h.writeServiceError(w, r, err)
		return
	}
	e := &Error{Message: br.msg, Details: br.details}
	if len(unhandled) > 0 {
		e.Details = append(e.Details, map[string]any{"message": MsgOptionalNotHandled, "extension_optional": unhandled})
	}
	h.log.Debug("etsi014: bad request", "path", r.URL.EscapedPath(), "message", br.msg)
	writeError(w, http.StatusBadRequest, e)
}

// writeServiceError maps a Service error onto the status codes of clause 5: 400 for what the
// caller got wrong, 401 for what it may not have, 503 for what the KME cannot do now.
func (h *handler) writeServiceError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, kms.ErrKeyNotFound):
		writeError(w, http.StatusBadRequest, &Error{Message: MsgKeysNotFound})
	case errors.Is(err, kms.ErrBadRequest), errors.Is(err, kms.ErrUnknownSAE):
		writeError(w, http.StatusBadRequest, &Error{Message: err.Error()})
	case errors.Is(err, kms.ErrUnauthorized):
		writeError(w, http.StatusUnauthorized, &Error{Message: err.Error()})
	case errors.Is(err, kms.ErrNotEnoughKey), errors.Is(err, kms.ErrNotConfirmed):
		writeError(w, http.StatusServiceUnavailable, &Error{Message: err.Error()})
	case errors.Is(err, kms.ErrRateLimited):
		// ETSI 014 knows no 429: "the KME cannot serve this now" is its 503.
		writeError(w, http.StatusServiceUnavailable, &Error{Message: kms.Message(err)})
	case errors.Is(err, context.Canceled):
		// The caller went away; nobody reads the answer.
		writeError(w, http.StatusServiceUnavailable, &Error{Message: "request cancelled"})
	default:
		h.log.Error("etsi014: service error", "path", r.URL.EscapedPath(), "err", err)
		writeError(w, http.StatusServiceUnavailable, &Error{Message: "internal error on the KME; retry later"})
	}
}

func writeError(w http.ResponseWriter, code int, e *Error) {
	body, err := json.Marshal(e)
	if err != nil {
		// Details came from a Service error's values; fall back to the message alone.
		body, _ = json.Marshal(&Error{Message: e.Message})
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, body []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store") // key containers must not be cached anywhere
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
