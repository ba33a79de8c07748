package etsi014

import (
	"encoding/json"
	"fmt"
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

