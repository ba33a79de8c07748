package audit

import (
	"bufio"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/qkms/qkms/kms"
)

// SameKey says whether two sites delivered the same key under keyID: fpA is the fingerprint
// recorded by site A (audit key keyA), fpB by site B. Both must authenticate under their
// site's audit key (kms.ErrFingerprint otherwise); the key digests they carry are then compared
// in constant time. Neither the auditor nor this function ever sees the key.
func SameKey(keyID string, fpA []byte, keyA *kms.AuditKey, fpB []byte, keyB *kms.AuditKey) (bool, error) {
	da, err := keyA.OpenFingerprint(keyID, fpA)
	if err != nil {
		return false, fmt.Errorf("audit: key %s, first site: %w", keyID, err)
	}
	db, err := keyB.OpenFingerprint(keyID, fpB)
	if err != nil {
		return false, fmt.Errorf("audit: key %s, second site: %w", keyID, err)
	}
	return subtle.ConstantTimeCompare(da, db) == 1, nil
}

// Comparison is the outcome of comparing the delivered keys of two sites' exports.
type Comparison struct {
	Same      []string // key IDs delivered with the same key at both sites
	Different []string // key IDs whose keys differ (a fault or a forgery)
	OnlyA     []string // key IDs delivered only at the first site (e.g. not fetched yet)
	OnlyB     []string
}

// CompareSites reads two exports (verify them first with Verify) and compares the fingerprints
// of every key delivered at both: issued to the master at one site, fetched by a slave at the
// other. A fingerprint that does not open under its site's audit key is an error.
func CompareSites(a io.Reader, keyA *kms.AuditKey, b io.Reader, keyB *kms.AuditKey) (Comparison, error) {
	var c Comparison
	da, err := digests(a, keyA)
	if err != nil {
		return c, fmt.Errorf("audit: first export: %w", err)
	}
	db, err := digests(b, keyB)
	if err != nil {
		return c, fmt.Errorf("audit: second export: %w", err)
	}
	for id, x := range da {
		y, ok := db[id]
		switch {
		case !ok:
			c.OnlyA = append(c.OnlyA, id)
		case subtle.ConstantTimeCompare(x, y) == 1:
			c.Same = append(c.Same, id)
		default:
			c.Different = append(c.Different, id)
		}
	}
	for id := range db {
		if _, ok := da[id]; !ok {
			c.OnlyB = append(c.OnlyB, id)
		}
	}
	for _, l := range [][]string{c.Same, c.Different, c.OnlyA, c.OnlyB} {
		sort.Strings(l)
	}
	return c, nil
}

// errInconsistent: one site recorded two different keys under one key ID.
var errInconsistent = errors.New("two different keys recorded under one key ID")

// digests opens every fingerprint of an export: key ID -> key digest.
func digests(r io.Reader, key *kms.AuditKey) (map[string][]byte, error) {
	out := map[string][]byte{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256<<10), maxLine)
	for n := 1; sc.Scan(); n++ {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		e := &l.AuditEntry
		if len(e.Fingerprints) == 0 {
			continue
		}
		if len(e.Fingerprints) != len(e.KeyIDs) {
			return nil, fmt.Errorf("line %d: %d fingerprints for %d keys", n, len(e.Fingerprints), len(e.KeyIDs))
		}
		for i, id := range e.KeyIDs {
			d, err := key.OpenFingerprint(id, e.Fingerprints[i])
			if err != nil {
				return nil, fmt.Errorf("line %d: key %s: %w", n, id, err)
			}
			if old, ok := out[id]; ok && subtle.ConstantTimeCompare(old, d) != 1 {
				return nil, fmt.Errorf("line %d: key %s: %w", n, id, errInconsistent)
			}
			out[id] = d
		}
	}
	return out, sc.Err()
}
