package pki

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Role is what an entity is allowed to be, carried in the certificate Subject OU.
type Role string

const (
	RoleSAE   Role = "sae"   // secure application entity: an encryptor taking keys
	RoleKME   Role = "kme"   // key management entity: a qkms site (server and peer client)
	RoleAdmin Role = "admin" // operator of a site (qkmsctl)
)

// MaxIDLen bounds entity IDs. ETSI GS QKD 014 does not fix a format; the bound keeps paths,
// file names and log lines sane.
const MaxIDLen = 256

// ErrBadID is returned for IDs that cannot name an entity.
var ErrBadID = errors.New("pki: invalid entity ID")

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	return r == RoleSAE || r == RoleKME || r == RoleAdmin
}

// OptionalID reads an optional ID-valued header or metadata entry: "" when vals is empty, its
// one value when that passes CheckID, an error wrapping ErrBadID otherwise.
func OptionalID(vals []string) (string, error) {
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1:
		return "", fmt.Errorf("%w: give one value, not %d", ErrBadID, len(vals))
	}
	if err := CheckID(vals[0]); err != nil {
		return "", err
	}
	return vals[0], nil
}

// CheckID rejects IDs that are empty, longer than MaxIDLen, not UTF-8, contain a control
// character or a '/', '\\', or are or contain "..". IDs become URL path segments (ETSI 014
// clause 5) and file names (WriteDevPKI), so anything that could traverse is refused.
// It is the one ID check of the project; api/etsi014 uses it for path IDs.
func CheckID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrBadID)
	case len(id) > MaxIDLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadID, MaxIDLen)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not UTF-8", ErrBadID)
	case strings.ContainsAny(id, `/\`):
		return fmt.Errorf("%w: contains a slash", ErrBadID)
	case strings.Contains(id, ".."), id == ".":
		return fmt.Errorf("%w: contains dots", ErrBadID)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: contains a control character", ErrBadID)
		}
	}
	return nil
}
