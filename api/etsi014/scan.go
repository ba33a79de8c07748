package etsi014

import "encoding/base64"

// scanKeyContainer decodes a Key container (clause 6.3) in the layout KMEs write, without
// encoding/json: the key bytes are decoded from the body straight into their own slices, and
// no reflection or intermediate values are involved (json.Unmarshal of the answers was about
// 4% of BenchmarkDeliver's CPU). It handles an object holding only "keys", whose entries hold
// "key_ID", "key" and optionally "key_extension" with string values, with strings free of
// escapes and of bytes outside printable ASCII. For anything else it returns ok false and the
// caller decodes the body with encoding/json, which then also reports any syntax error: the
// results of the two always agree (FuzzKeyContainer).
func scanKeyContainer(b []byte) ([]DeliveredKey, bool) {
	keys, ok := scanKeys(b)
	if !ok {
		for i := range keys {
			clear(keys[i].Bytes)
		}
		return nil, false
	}
	return keys, true
}

// scanKeys is scanKeyContainer, returning the keys read so far when it fails.
func scanKeys(b []byte) (keys []DeliveredKey, ok bool) {
	s := scanner{b: b}
	if !s.byte('{') || !s.name("keys") || !s.byte('[') {
		return nil, false
	}
	keys = []DeliveredKey{}
	for more := !s.byte(']'); more; {
		k, ok := s.key()
		if !ok {
			return keys, false
		}
		keys = append(keys, k)
		if more, ok = s.next(']'); !ok {
			return keys, false
		}
	}
	return keys, s.end('}')
}

// scanKeyIDs reads a Key IDs body (clause 6.4) of the simple layout: an object holding only
// "key_IDs", a non-empty array of objects each holding only "key_ID". ok false leaves the body
// to encoding/json (decodeKeyIDs), which reads the same IDs from whatever this accepts
// (FuzzKeyIDs); the IDs are checked by the caller either way.
func scanKeyIDs(b []byte) (ids []string, ok bool) {
	s := scanner{b: b}
	if !s.byte('{') || !s.name("key_IDs") || !s.byte('[') {
		return nil, false
	}
	for more := true; more; {
		if !s.byte('{') || !s.name("key_ID") {
			return nil, false
		}
		id, ok := s.str()
		if !ok || !s.byte('}') {
			return nil, false
		}
		ids = append(ids, string(id))
		if more, ok = s.next(']'); !ok {
			return nil, false
		}
	}
	return ids, s.end('}')
}

// scanKeyRequest reads a Key request body (clause 6.2) of the simple layout: an object with
// "number" and/or "size" as non-negative integers, or an empty body. ok false leaves the body
// to encoding/json (decodeKeyRequest), which agrees with what this accepts (FuzzKeyRequest).
func scanKeyRequest(b []byte) (w keyRequestWire, ok bool) {
	s := scanner{b: b}
	if s.space(); s.i == len(s.b) {
		return w, true // the default request
	}
	ok = s.object(func(n []byte) bool {
		v, ok := s.uint()
		switch {
		case !ok:
			return false
		case string(n) == "number" && w.Number == nil:
			w.Number = &v
		case string(n) == "size" && w.Size == nil:
			w.Size = &v
		default:
			return false
		}
		return true
	})
	return w, ok && s.end(0)
}

// scanner reads b from i on.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c, after any white space, and reports whether it was there.
func (s *scanner) byte(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// next follows an element of a list or a member of an object: more when a comma comes, not
// more when close does, and ok false when neither.
func (s *scanner) next(close byte) (more, ok bool) {
	if s.byte(close) {
		return false, true
	}
	return true, s.byte(',')
}

// end consumes close (0: none) and reports whether only white space is left.
func (s *scanner) end(close byte) bool {
	if close != 0 && !s.byte(close) {
		return false
	}
	s.space()
	return s.i == len(s.b)
}

// str reads a string without escapes, of printable ASCII only, and returns its contents
// (aliasing b).
func (s *scanner) str() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	start := s.i
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// member reads a member name and the colon after it.
func (s *scanner) member() ([]byte, bool) {
	n, ok := s.str()
	return n, ok && s.byte(':')
}

// object reads an object, calling value to read the value of each member by its name; false
// from value, or a malformed object, ends it with false.
func (s *scanner) object(value func(name []byte) bool) bool {
	if !s.byte('{') {
		return false
	}
	for more := !s.byte('}'); more; {
		n, ok := s.member()
		if !ok || !value(n) {
			return false
		}
		if more, ok = s.next('}'); !ok {
			return false
		}
	}
	return true
}

// name reads a member name and the colon after it; the name must be want.
func (s *scanner) name(want string) bool {
	n, ok := s.member()
	return ok && string(n) == want
}

// key reads one entry of "keys". Key bytes it decoded are wiped when it fails.
func (s *scanner) key() (k DeliveredKey, ok bool) {
	defer func() {
		if !ok {
			clear(k.Bytes)
		}
	}()
	var seenID, seenKey, seenExt bool
	ok = s.object(func(n []byte) bool {
		switch string(n) {
		case "key_ID":
			v, ok := s.str()
			if !ok || seenID {
				return false
			}
			k.ID, seenID = string(v), true
		case "key":
			v, ok := s.str()
			if !ok || seenKey {
				return false
			}
			k.Bytes = make([]byte, base64.StdEncoding.DecodedLen(len(v)))
			m, err := base64.StdEncoding.Decode(k.Bytes, v)
			if err != nil {
				return false
			}
			k.Bytes, seenKey = k.Bytes[:m], true
		case "key_extension":
			if seenExt {
				return false
			}
			if k.Extension, ok = s.stringMap(); !ok {
				return false
			}
			seenExt = true
		default:
			return false
		}
		return true
	})
	return k, ok && seenID && seenKey
}

// stringMap reads an object whose values are all strings.
func (s *scanner) stringMap() (map[string]any, bool) {
	m := map[string]any{}
	ok := s.object(func(n []byte) bool {
		v, ok := s.str()
		if _, dup := m[string(n)]; !ok || dup {
			return false
		}
		m[string(n)] = string(v)
		return true
	})
	if !ok {
		return nil, false
	}
	return m, true
}

// uint reads a JSON number that is a non-negative integer of at most 18 digits, without a
// leading zero (JSON allows none).
func (s *scanner) uint() (int64, bool) {
	s.space()
	start := s.i
	var v int64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' && s.i-start < 18 {
		v = v*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	switch {
	case s.i == start, s.i-start > 1 && s.b[start] == '0':
		return 0, false
	case s.i < len(s.b) && (s.b[s.i] >= '0' && s.b[s.i] <= '9' || s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E'):
		return 0, false // longer, or not an integer: encoding/json decides
	}
	return v, true
}
