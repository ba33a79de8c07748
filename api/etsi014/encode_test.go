package etsi014

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestAppendObject checks that extension objects written without encoding/json are written
// exactly as encoding/json writes them, and that the others go through it.
func TestAppendObject(t *testing.T) {
	many := map[string]any{}
	for i := range 9 {
		many[fmt.Sprintf("m%d", 8-i)] = fmt.Sprint(i)
	}
	for _, m := range []map[string]any{
		{"qkms_provenance": "qkd"},
		{"b": "2", "a": "1", "c": ""},
		{"": "", "é": "ü", "x\ny": "\"q\"", "<h>": "a&b", "bad": "\xff\xfe", "\u2028": "\u2029"},
		many,               // more members than appendObject sorts on its stack
		{"n": 1, "s": "x"}, // not all strings
		{"nested": map[string]any{"a": "b"}, "s": "x"},
		{"list": []any{"a", 1.5, nil}},
	} {
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendObject([]byte("prefix"), m)
		if err != nil {
			t.Fatalf("%v: %v", m, err)
		}
		if string(got) != "prefix"+string(want) {
			t.Errorf("appendObject(%v) = %s, encoding/json writes %s", m, got[len("prefix"):], want)
		}
	}
	if _, err := appendObject(nil, map[string]any{"f": func() {}}); err == nil {
		t.Error("an object encoding/json cannot write gave no error")
	}
}

// TestReadAnswer checks that the client reads a body of announced length into the one buffer
// made for it, and any body up to the limit, one byte more showing that it is longer.
func TestReadAnswer(t *testing.T) {
	body := `{"keys":[{"key_ID":"a","key":"AQID"}]}`
	for _, tc := range []struct {
		name      string
		announced int64
		sent      string
		want      string
	}{
		{"announced", int64(len(body)), body, body},
		{"unknown length", -1, body, body},
		{"empty", 0, "", ""},
		{"announced shorter than sent", 4, body, body}, // net/http never does this; read what comes
	} {
		resp := &http.Response{ContentLength: tc.announced, Body: io.NopCloser(strings.NewReader(tc.sent))}
		got, err := readAnswer(resp)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: read %q, %v; want %q", tc.name, got, err, tc.want)
		}
		if tc.announced == int64(len(tc.sent)) && cap(got) != len(tc.sent)+bytes.MinRead {
			t.Errorf("%s: buffer of %d bytes for %d announced: it grew", tc.name, cap(got), tc.announced)
		}
	}
	big := &http.Response{ContentLength: -1, Body: io.NopCloser(io.LimitReader(zeros{}, maxResponseBytes+10))}
	if got, err := readAnswer(big); err != nil || len(got) != maxResponseBytes+1 {
		t.Errorf("a body over the limit: read %d bytes, %v; want %d", len(got), err, maxResponseBytes+1)
	}
	failing := &http.Response{ContentLength: 100, Body: io.NopCloser(io.MultiReader(strings.NewReader("abc"), errReader{}))}
	if _, err := readAnswer(failing); err == nil {
		t.Error("a body cut short gave no error")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
