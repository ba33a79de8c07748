package etsi014

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/qkms/qkms/pki"
)

// checkAnswer asserts what every answer of the handler must be: a known status code and a
// JSON body, an Error object with a message when not 200.
func checkAnswer(t *testing.T, code int, body []byte) {
	t.Helper()
	switch code {
	case 200, 400, 401, 404, 405, 503:
	default:
		t.Fatalf("status %d", code)
	}
	if code == 200 {
		if !json.Valid(body) {
			t.Fatalf("200 with invalid JSON %q", body)
		}
		return
	}
	var e Error
	if err := json.Unmarshal(body, &e); err != nil || e.Message == "" {
		t.Fatalf("status %d with body %q", code, body)
	}
}

func FuzzKeyRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"number":2,"size":512}`, `{"size":100}`, `{"number":-1}`, `{"number":1e99}`,
		`{"additional_slave_SAE_IDs":["SAE-B2","SAE-B2"]}`, `{"extension_mandatory":[{"a":1}]}`,
		`{"extension_optional":[{"a":1},null]}`, `{"extension_mandatory":[null]}`, `[1]`, `null`,
		`{"number":"1"}`, `{"size":9223372036854775807}`, "{\"number\":1}\x00", `{"NUMBER":3}`,
		` { "number" : 8 , "size" : 256 } `, `{"number":08}`, `{"number":1,"number":2}`, `{"size":1.0}`, `{"number":123456789012345678}`,
	} {
		f.Add(s)
	}
	svc := newFakeService(1 << 30)
	h := NewHandler(svc, Options{Logger: quietLog, OptionalExtensions: []string{"o"}, MandatoryExtensions: []string{"m"}})
	f.Fuzz(func(t *testing.T, body string) {
		if w, ok := scanKeyRequest([]byte(body)); ok {
			want, err := decodeKeyRequestJSON([]byte(body))
			if err != nil || !reflect.DeepEqual(w, want) {
				t.Fatalf("scanned %q as %+v, encoding/json as %+v, %v", body, w, want, err)
			}
		}
		req, _, err := decodeKeyRequest([]byte(body), "SAE-B1", extensionSet{"m": true}, extensionSet{"o": true})
		if err == nil {
			if req.Number < 1 || req.Size < 0 || req.Size%8 != 0 {
				t.Fatalf("accepted %+v from %q", req, body)
			}
			for _, id := range req.AdditionalSlaveSAEIDs {
				if pki.CheckID(id) != nil || id == "SAE-B1" {
					t.Fatalf("accepted slave %q", id)
				}
			}
		}
		rec := serveLocal(h, "SAE-A1", http.MethodPost, keysPath+"SAE-B1/enc_keys", body)
		checkAnswer(t, rec.Code, rec.Body.Bytes())
	})
}

func FuzzKeyIDs(f *testing.F) {
	for _, s := range []string{
		`{"key_IDs":[{"key_ID":"a"}]}`, `{"key_IDs":[{"key_ID":"a"},{"key_ID":"a"}]}`,
		`{"key_IDs":[]}`, `{"key_IDs":null}`, `{"key_IDs":[null]}`, `{"key_IDs":[{"key_ID":null}]}`,
		`{"key_IDs":[{"key_ID":"a","master_SAE_ID":"SAE-A1"}],"x":[]}`, ``, `{`, `"a"`,
		` { "key_IDs" : [ { "key_ID" : "a" } , { "key_ID" : "b" } ] } `, `{"key_IDs":[{"key_ID":"a","key_ID":"b"}]}`,
	} {
		f.Add(s)
	}
	svc := newFakeService(0)
	h := NewHandler(svc, Options{Logger: quietLog})
	f.Fuzz(func(t *testing.T, body string) {
		if ids, ok := scanKeyIDs([]byte(body)); ok {
			want, err := decodeKeyIDsJSON([]byte(body))
			if err != nil || !slices.Equal(ids, want) {
				t.Fatalf("scanned %q as %q, encoding/json as %q, %v", body, ids, want, err)
			}
		}
		ids, err := decodeKeyIDs([]byte(body))
		if err == nil {
			seen := map[string]bool{}
			for _, id := range ids {
				if checkKeyID(id) != nil || seen[id] {
					t.Fatalf("accepted IDs %q from %q", ids, body)
				}
				seen[id] = true
			}
			if len(ids) == 0 {
				t.Fatalf("accepted no IDs from %q", body)
			}
		}
		rec := serveLocal(h, "SAE-B1", http.MethodPost, keysPath+"SAE-A1/dec_keys", body)
		checkAnswer(t, rec.Code, rec.Body.Bytes())
	})
}

// FuzzPath feeds request targets (path and query) as a server reads them off the wire.
func FuzzPath(f *testing.F) {
	for _, s := range []string{
		"SAE-B1/status", "SAE%20B/status", "SAE%2FB1/status", "../status", "%2e%2e/status",
		"a/b/enc_keys", "SAE-B1/enc_keys?number=2&size=64", "SAE-B1/dec_keys?key_ID=x",
		"SAE-B1/dec_keys?key_ID=%00", "%zz/status", "/status", "SAE-B1/", "SAE-B1/enc_keys?number=%",
	} {
		f.Add(s, true)
	}
	svc := newFakeService(1 << 30)
	h := NewHandler(svc, Options{Logger: quietLog})
	f.Fuzz(func(t *testing.T, rest string, get bool) {
		method := http.MethodPost
		if get {
			method = http.MethodGet
		}
		rec := serveLocal(h, "SAE-A1", method, keysPath+rest, "")
		if rec.Code == -1 {
			return // not a request target a server would accept
		}
		checkAnswer(t, rec.Code, rec.Body.Bytes())
		if rec.Code == 200 {
			// The ID that was served is a valid one.
			st := new(Status)
			if strings.Contains(rest, "/status") && json.Unmarshal(rec.Body.Bytes(), st) == nil && st.SlaveSAEID != "" {
				if err := pki.CheckID(st.SlaveSAEID); err != nil {
					t.Fatalf("served invalid ID %q: %v", st.SlaveSAEID, err)
				}
			}
		}
	})
}
