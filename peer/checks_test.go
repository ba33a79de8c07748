package peer

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/qkms/qkms/pki"
)

// uuidReference is the rule canonicalUUID implements, by parsing and formatting again.
func uuidReference(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}

// uuidVariants are spellings of the UUID s, canonical or not, and near misses.
func uuidVariants(s string) []string {
	out := []string{s, strings.ToUpper(s), "{" + s + "}", "urn:uuid:" + s, strings.ReplaceAll(s, "-", ""),
		s[:35], s + "0", s[:8] + "0" + s[9:], s[:14] + "-" + s[15:]}
	for _, i := range []int{0, 9, 35} {
		out = append(out, s[:i]+"g"+s[i+1:], s[:i]+"A"+s[i+1:], s[:i]+"F"+s[i+1:], s[:i]+"0"+s[i+1:])
	}
	return out
}

func TestCanonicalUUID(t *testing.T) {
	for range 200 {
		for _, s := range append(uuidVariants(uuid.NewString()), uuidVariants(uuid.Must(uuid.NewV7()).String())...) {
			if got, want := canonicalUUID(s), uuidReference(s); got != want {
				t.Fatalf("canonicalUUID(%q) = %v, uuid.Parse and String say %v", s, got, want)
			}
		}
	}
	if !canonicalUUID(uuid.Must(uuid.NewV7()).String()) {
		t.Fatal("a new key ID is not canonical")
	}
}

func FuzzCanonicalUUID(f *testing.F) {
	for _, s := range uuidVariants("0193a5b2-7c4e-7f3a-9d1e-0123456789ab") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := canonicalUUID(s), uuidReference(s); got != want {
			t.Fatalf("canonicalUUID(%q) = %v, uuid.Parse and String say %v", s, got, want)
		}
	})
}

// plainIDCases are IDs the sites use and IDs at and past the edges of the rule.
var plainIDCases = []string{
	"KME-A", "SAE-B1", "qkd-link-7:block-0001", "a.b", ".a", "a.", "~!@#$%^&*()_+{}|:\"<>?`-=[];',",
	strings.Repeat("x", MaxIDLen), strings.Repeat("x", MaxIDLen+1),
	"", ".", "..", "a..b", "a/b", `a\b`, "a\x00b", "a\tb", "a\x1fb", "a\x7fb",
	"SAE-Ü", "a\u0085b", "a\u200bb", "\xff", "a\xc3",
}

// plainID may leave an ID to the full rule, but never accepts one that pki.CheckID, the
// project's rule for entity IDs, rejects; and checkID as a whole agrees with that rule.
func TestPlainID(t *testing.T) {
	for _, id := range plainIDCases {
		full := pki.CheckID(id) == nil
		if plainID(id) && !full {
			t.Errorf("plainID accepts %q, which the ID rule rejects", id)
		}
		if got := checkID("test", id) == nil; got != full {
			t.Errorf("checkID(%q) accepts: %v, the ID rule: %v", id, got, full)
		}
	}
	for _, id := range []string{"KME-A", "SAE-B1", "a.b", strings.Repeat("x", MaxIDLen)} {
		if !plainID(id) {
			t.Errorf("plainID leaves the plain ID %q to the full rule", id)
		}
	}
}

func FuzzPlainID(f *testing.F) {
	for _, id := range plainIDCases {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		full := pki.CheckID(id) == nil
		if plainID(id) && !full {
			t.Fatalf("plainID accepts %q, which the ID rule rejects", id)
		}
		if got := checkID("test", id) == nil; got != full {
			t.Fatalf("checkID(%q) accepts: %v, the ID rule: %v", id, got, full)
		}
	})
}
