package peer

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// roleKME is the Subject OU of KME certificates (convention of package pki, RoleKME).
const roleKME = "kme"

// Identity errors, for callers of Identify functions.
var (
	// ErrUnverified: the connection has no verified certificate chain (no client certificate
	// or verification skipped). The server answers codes.Unauthenticated.
	ErrUnverified = errors.New("peer: no verified certificate")
	// ErrNotKME: the certificate is verified but does not carry the "kme" role. The server
	// answers codes.PermissionDenied.
	ErrNotKME = errors.New("peer: certificate is not a KME certificate")
	// ErrWrongKME: the server's certificate names another KME than the one dialled.
	ErrWrongKME = errors.New("peer: server certificate names another KME")
)

// Identify maps a TLS connection state to the KME ID of the other end. It must only trust
// verified chains.
type Identify func(cs *tls.ConnectionState) (string, error)

// IdentifyKME is the default Identify: the Subject CommonName of the verified leaf
// certificate, which must have exactly one Subject OrganizationalUnit, "kme" (the pki
// convention; a certificate with several roles is refused rather than guessed at).
func IdentifyKME(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", ErrUnverified
	}
	leaf := cs.VerifiedChains[0][0]
	ou := leaf.Subject.OrganizationalUnit
	if len(ou) != 1 || ou[0] != roleKME {
		return "", fmt.Errorf("%w: %s has roles %q", ErrNotKME, quote(leaf.Subject.CommonName), ou)
	}
	id := leaf.Subject.CommonName
	if err := checkID("KME", id); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotKME, err)
	}
	return id, nil
}
