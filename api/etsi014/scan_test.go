package etsi014

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestScanKeyContainer checks that the scanner takes what qkms writes, and that it leaves to
// encoding/json what it does not handle.
func TestScanKeyContainer(t *testing.T) {
	keys := []DeliveredKey{
		{ID: "0193a5b2-7c1e-7d2a-9f3b-4c5d6e7f8a9b", Bytes: bytes.Repeat([]byte{0xa5}, 32),
			Extension: map[string]any{"qkms_provenance": "qkd"}},
		{ID: "0193a5b2-7c1e-7d2a-9f3b-4c5d6e7f8a9c", Bytes: []byte{1, 2, 3}},
	}
	written, err := appendKeyContainer(nil, cloneKeys(keys), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := scanKeyContainer(written)
	if !ok {
		t.Fatalf("the scanner refused what the server writes: %s", written)
	}
	if !reflect.DeepEqual(got, keys) {
		t.Fatalf("scanned %+v, want %+v", got, keys)
	}
	for _, body := range []string{
		`{"keys":[{"key_ID":"a\u0062","key":"AQ=="}]}`,                        // escape
		`{"keys":[{"key_ID":"a","key":"AQ=="}],"key_container_extension":{}}`, // container extension
		`{"keys":[{"key_ID":"a","key":"AQ==","key_extension":{"n":1}}]}`,      // non-string value
		`{"keys":[{"KEY_ID":"a","key":"AQ=="}]}`,                              // json folds case
		`{"keys":[{"key_ID":"a","key":"AQ"}]}`,                                // bad base64
		`{"keys":[{"key_ID":"a"}]}`,                                           // no key
		`{"keys":null}`, `{"keys":[]} x`, `{"keys":[{"key_ID":"é","key":""}]}`,
	} {
		if keys, ok := scanKeyContainer([]byte(body)); ok {
			t.Errorf("scanned %s as %+v; encoding/json should have", body, keys)
		}
	}
}

func cloneKeys(keys []DeliveredKey) []DeliveredKey {
	out := make([]DeliveredKey, len(keys))
	for i, k := range keys {
		out[i] = DeliveredKey{ID: k.ID, Bytes: bytes.Clone(k.Bytes), Extension: k.Extension}
	}
	return out
}

// FuzzKeyContainer checks that whatever the scanner accepts, encoding/json reads the same.
func FuzzKeyContainer(f *testing.F) {
	for _, s := range []string{
		`{"keys":[]}`, ` { "keys" : [ { "key_ID" : "a" , "key" : "AQID" } ] } `,
		`{"keys":[{"key":"AQID","key_ID":"b","key_extension":{"qkms_provenance":"hybrid","x":""}}]}`,
		`{"keys":[{"key_ID":"a","key":"AQID"},{"key_ID":"a","key":"","key_extension":{}}]}`,
		`{"keys":[{"key_ID":"a","key":"AQID","key_ID":"b"}]}`, `{"keys":[{"key_ID":"a","key":"AQ\nID"}]}`,
		`{"keys":[{"key_ID":"a","key":"AQID","key_extension":{"p":"q","p":"r"}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := scanKeyContainer(body)
		if !ok {
			return
		}
		want, err := decodeKeysJSON(body)
		if err != nil {
			t.Fatalf("scanned %q, which encoding/json refuses: %v", body, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("scanned %q as %+v, encoding/json as %+v", body, got, want)
		}
		if strings.Contains(string(body), `\`) {
			t.Fatalf("scanned %q, which has an escape", body)
		}
	})
}

// The request scanners take what the client sends for plain requests.
func TestScanRequests(t *testing.T) {
	body, _ := json.Marshal(KeyRequest{Number: 8, Size: 256})
	w, ok := scanKeyRequest(body)
	if !ok || w.Number == nil || *w.Number != 8 || w.Size == nil || *w.Size != 256 {
		t.Fatalf("scanned %s as %+v, %v", body, w, ok)
	}
	if w, ok := scanKeyRequest(nil); !ok || w.Number != nil || w.Size != nil {
		t.Fatalf("empty body scanned as %+v, %v", w, ok)
	}
	body, _ = json.Marshal(KeyIDs{KeyIDs: []KeyIDEntry{{KeyID: "a"}, {KeyID: "b"}}})
	if ids, ok := scanKeyIDs(body); !ok || !slices.Equal(ids, []string{"a", "b"}) {
		t.Fatalf("scanned %s as %q, %v", body, ids, ok)
	}
	for _, body := range []string{`{"number":-1}`, `{"number":1e3}`, `{"number":01}`, `{"numbers":1}`,
		`{"number":1234567890123456789}`, `{"additional_slave_SAE_IDs":[]}`} {
		if w, ok := scanKeyRequest([]byte(body)); ok {
			t.Errorf("scanned %s as %+v; encoding/json should have", body, w)
		}
	}
	for _, body := range []string{`{"key_IDs":[]}`, `{"key_IDs":[{"key_ID":"a","x":1}]}`, `{"key_IDs":[{"key_ID":"\u0061"}]}`} {
		if ids, ok := scanKeyIDs([]byte(body)); ok {
			t.Errorf("scanned %s as %q; encoding/json should have", body, ids)
		}
	}
}

// A Key container the client cannot read is reported without quoting it: it may hold keys.
func TestDecodeKeysErrorQuotesNoKey(t *testing.T) {
	for _, body := range []string{
		`{"keys":[{"key_ID":"a","key":QSECRETQ}]}`,
		`{"keys":[{"key_ID":"a","key":987654321}]}`,
		`{"keys":[{"key_ID":"a","key":"c2VjcmV0"},{"key_ID":"b","key":Z}]}`,
	} {
		_, err := decodeKeys([]byte(body))
		if err == nil {
			t.Fatalf("%s: decoded", body)
		}
		for _, secret := range []string{"QSECRETQ", "'Q'", "987654321", "'Z'", "c2VjcmV0"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: error %q quotes the body", body, err)
			}
		}
	}
}
