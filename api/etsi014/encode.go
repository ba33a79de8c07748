package etsi014

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
)

// bufPool recycles response buffers. Every buffer is zeroed before it goes back, so key
// material never outlives the response that carried it.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// writeKeys answers with a Key container (clause 6.3). It is written by hand rather than
// with encoding/json because json keeps its output in internal buffers we cannot wipe; here
// the key bytes (plain and base64) exist only in keys and in buf, and both are zeroed once
// the answer is written.
func (h *handler) writeKeys(w http.ResponseWriter, r *http.Request, keys []DeliveredKey, containerExt map[string]any) {
	bp := bufPool.Get().(*[]byte)
	buf, err := appendKeyContainer((*bp)[:0], keys, containerExt)
	for i := range keys {
		clear(keys[i].Bytes)
	}
	if err != nil {
		clear(buf[:cap(buf)])
		*bp = buf[:0]
		bufPool.Put(bp)
		h.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, buf)
	clear(buf[:cap(buf)])
	*bp = buf[:0]
	bufPool.Put(bp)
}

func appendKeyContainer(buf []byte, keys []DeliveredKey, containerExt map[string]any) ([]byte, error) {
	buf = append(buf, `{"keys":[`...)
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"key_ID":`...)
		buf = appendString(buf, k.ID)
		buf = append(buf, `,"key":"`...)
		buf = base64.StdEncoding.AppendEncode(buf, k.Bytes)
		buf = append(buf, '"')
		if len(k.Extension) > 0 {
			buf = append(buf, `,"key_extension":`...)
			var err error
			if buf, err = appendObject(buf, k.Extension); err != nil {
				return buf, fmt.Errorf("etsi014: encode key_extension of %s: %w", k.ID, err)
			}
		}
		buf = append(buf, '}')
	}
	buf = append(buf, ']')
	if len(containerExt) > 0 {
		ext, err := json.Marshal(containerExt)
		if err != nil {
			return buf, fmt.Errorf("etsi014: encode key_container_extension: %w", err)
		}
		buf = append(buf, `,"key_container_extension":`...)
		buf = append(buf, ext...)
	}
	return append(buf, '}'), nil
}

// appendObject appends m as a JSON object, as encoding/json writes it (members sorted by
// name). An object of string members, as qkms puts in every key_extension, is written here;
// any other goes through encoding/json.
func appendObject(buf []byte, m map[string]any) ([]byte, error) {
	var names [8]string
	sorted := names[:0]
	for n, v := range m {
		if _, ok := v.(string); !ok || len(sorted) == len(names) {
			ext, err := json.Marshal(m)
			return append(buf, ext...), err
		}
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	buf = append(buf, '{')
	for i, n := range sorted {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendString(buf, n)
		buf = append(buf, ':')
		buf = appendString(buf, m[n].(string))
	}
	return append(buf, '}'), nil
}

// appendString appends s as a JSON string. Key IDs are UUIDs, which need no escaping; any
// other string goes through encoding/json.
func appendString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(buf, q...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}
