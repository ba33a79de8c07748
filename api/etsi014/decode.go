package etsi014

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/qkms/qkms/pki"
)

// badRequest is a 400 answer decided by the handler itself, before the Service is called,
// so a rejected request consumes nothing.
type badRequest struct {
	msg     string
	details []map[string]any
}

func (e *badRequest) Error() string { return "etsi014: " + e.msg }

func reject(format string, args ...any) *badRequest {
	return &badRequest{msg: fmt.Sprintf(format, args...)}
}

// maxNumber bounds number so that later arithmetic (number * size) cannot overflow; the
// Service applies its own max_key_per_request, which is far lower.
const maxNumber = math.MaxInt32

// keyRequestWire is the Key request as it arrives: pointers tell an absent member from zero.
type keyRequestWire struct {
	Number                *int64           `json:"number"`
	Size                  *int64           `json:"size"`
	AdditionalSlaveSAEIDs []string         `json:"additional_slave_SAE_IDs"`
	ExtensionMandatory    []map[string]any `json:"extension_mandatory"`
	ExtensionOptional     []map[string]any `json:"extension_optional"`
}

// extensionSet says which extension member names the Service handles.
type extensionSet map[string]bool

// decodeKeyRequest parses and checks a Key request body (clause 6.2). An empty body is the
// default request. Unknown members are ignored. unhandled lists extension_optional names
// the Service does not handle (ignored, reported in details).
func decodeKeyRequest(body []byte, slave string, mandatory, optional extensionSet) (req KeyRequest, unhandled []string, err error) {
	w, ok := scanKeyRequest(body)
	if !ok {
		if w, err = decodeKeyRequestJSON(body); err != nil {
			return KeyRequest{}, nil, err
		}
	}
	return checkKeyRequest(w, slave, mandatory, optional)
}

// decodeKeyRequestJSON reads any Key request body with encoding/json.
func decodeKeyRequestJSON(body []byte) (keyRequestWire, error) {
	var w keyRequestWire
	err := unmarshalObject(body, &w)
	return w, err
}

// decodeKeyRequestQuery reads the GET form of Get key (clause 5.3): only number and size,
// each at most once; anything richer must be POSTed.
func decodeKeyRequestQuery(q url.Values, slave string) (KeyRequest, error) {
	var w keyRequestWire
	for name, vals := range q {
		if name != "number" && name != "size" {
			return KeyRequest{}, reject("GET enc_keys accepts only the number and size parameters; use POST for %q", name)
		}
		if len(vals) != 1 {
			return KeyRequest{}, reject("parameter %s given %d times", name, len(vals))
		}
		v, err := strconv.ParseInt(vals[0], 10, 64)
		if err != nil {
			return KeyRequest{}, reject("parameter %s shall be an integer", name)
		}
		if name == "number" {
			w.Number = &v
		} else {
			w.Size = &v
		}
	}
	req, _, err := checkKeyRequest(w, slave, nil, nil)
	return req, err
}

func checkKeyRequest(w keyRequestWire, slave string, mandatory, optional extensionSet) (KeyRequest, []string, error) {
	req := KeyRequest{Number: 1}
	if w.Number != nil {
		if *w.Number < 1 || *w.Number > maxNumber {
			return KeyRequest{}, nil, reject("number shall be a positive integer")
		}
		req.Number = int(*w.Number)
	}
	if w.Size != nil {
		if *w.Size <= 0 || *w.Size > maxNumber {
			return KeyRequest{}, nil, reject("size shall be a positive integer")
		}
		// qkms supports multiples of 8 bits only; the standard prescribes this message.
		if *w.Size%8 != 0 {
			return KeyRequest{}, nil, reject(MsgSizeNotMultipleOf8)
		}
		req.Size = int(*w.Size)
	}
	seen := map[string]bool{slave: true}
	for _, id := range w.AdditionalSlaveSAEIDs {
		if err := pki.CheckID(id); err != nil {
			return KeyRequest{}, nil, reject("additional_slave_SAE_IDs: %v", err)
		}
		if seen[id] {
			return KeyRequest{}, nil, reject("additional_slave_SAE_IDs: SAE %q named twice", id)
		}
		seen[id] = true
	}
	req.AdditionalSlaveSAEIDs = w.AdditionalSlaveSAEIDs

	// extension_mandatory: every parameter must be supported, else the prescribed 400.
	var unsupported []any
	for _, ext := range w.ExtensionMandatory {
		for name := range ext {
			if !mandatory[name] {
				unsupported = append(unsupported, name)
			}
		}
	}
	if len(unsupported) > 0 {
		return KeyRequest{}, nil, &badRequest{
			msg:     MsgMandatoryNotSupported,
			details: []map[string]any{{"extension_mandatory_unsupported": unsupported}},
		}
	}
	req.ExtensionMandatory = w.ExtensionMandatory

	// extension_optional: unknown ones are ignored and reported.
	var unhandled []string
	for _, ext := range w.ExtensionOptional {
		kept := map[string]any{}
		for name, v := range ext {
			if optional[name] {
				kept[name] = v
			} else {
				unhandled = append(unhandled, name)
			}
		}
		if len(kept) > 0 {
			req.ExtensionOptional = append(req.ExtensionOptional, kept)
		}
	}
	return req, unhandled, nil
}

// keyIDsWire is the Key IDs format as it arrives; unknown members of entries are ignored.
type keyIDsWire struct {
	KeyIDs []struct {
		KeyID *string `json:"key_ID"`
	} `json:"key_IDs"`
}

// decodeKeyIDs parses a Key IDs body (clause 6.4) into the list of IDs.
func decodeKeyIDs(body []byte) ([]string, error) {
	ids, ok := scanKeyIDs(body)
	if !ok {
		var err error
		if ids, err = decodeKeyIDsJSON(body); err != nil {
			return nil, err
		}
	}
	if err := checkKeyIDs(ids); err != nil {
		return nil, err
	}
	return ids, nil
}

// decodeKeyIDsJSON reads any Key IDs body with encoding/json; the IDs are not checked.
func decodeKeyIDsJSON(body []byte) ([]string, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, reject("request body shall be a Key IDs object")
	}
	var w keyIDsWire
	if err := unmarshalObject(body, &w); err != nil {
		return nil, err
	}
	if len(w.KeyIDs) == 0 {
		return nil, reject("key_IDs shall list at least one key_ID")
	}
	ids := make([]string, 0, len(w.KeyIDs))
	for i, e := range w.KeyIDs {
		if e.KeyID == nil {
			return nil, reject("key_IDs[%d]: key_ID missing", i)
		}
		ids = append(ids, *e.KeyID)
	}
	return ids, nil
}

// checkKeyIDs refuses empty, oversized, non-UTF-8 or control-character IDs and duplicates:
// a repeated ID would make one request fetch the same key twice.
func checkKeyIDs(ids []string) error {
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if err := checkKeyID(id); err != nil {
			return err
		}
		if seen[id] {
			return reject("key_ID %q requested twice", id)
		}
		seen[id] = true
	}
	return nil
}

func checkKeyID(id string) error {
	if id == "" || len(id) > pki.MaxIDLen || !utf8.ValidString(id) {
		return reject("key_ID shall be a non-empty UTF-8 string of at most %d bytes", pki.MaxIDLen)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return reject("key_ID shall not contain control characters")
		}
	}
	return nil
}

// unmarshalObject decodes a JSON object into v, turning decoder errors into 400 messages
// that name the offending member. An empty body leaves v zero.
func unmarshalObject(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil
	}
	if trimmed[0] != '{' {
		return reject("request body shall be a JSON object")
	}
	err := json.Unmarshal(trimmed, v)
	if err == nil {
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return reject("member %s: wrong type (got JSON %s, want %s)", typeErr.Field, typeErr.Value, jsonKind(typeErr.Type.Kind().String()))
	case errors.As(err, &syntaxErr):
		return reject("malformed JSON at byte %d", syntaxErr.Offset)
	default:
		return reject("malformed JSON request body")
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int64", "int":
		return "integer"
	case "slice":
		return "array"
	case "map", "struct":
		return "object"
	default:
		return goKind
	}
}
