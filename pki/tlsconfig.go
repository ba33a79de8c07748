package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// cipherSuites12 are the TLS 1.2 suites qkms accepts: ECDHE for forward secrecy and AEAD
// ciphers only (RFC 7525 clause 4.2; ETSI GS QKD 014 clause 4 asks for TLS 1.2 or later).
// TLS 1.3 suites are not configurable in Go and are all AEAD.
var cipherSuites12 = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerConfig returns a TLS configuration for a qkms listener: it presents certFile/keyFile
// and requires a client certificate verified against the CA in caFile (mutual TLS; a client
// without one is refused during the handshake). TLS 1.3 is negotiated whenever the client
// offers it; TLS 1.2 is the minimum.
func ServerConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, pool, err := loadPair(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		CipherSuites: cipherSuites12,
	}, nil
}

// ClientConfig returns a TLS configuration for a client of a qkms listener (an SAE, a peer
// KME, an admin): it presents certFile/keyFile and verifies the server against caFile.
// The server name is taken from the URL or address dialled; use RequirePeer to pin the
// server's entity ID as well.
func ClientConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, pool, err := loadPair(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS12,
		CipherSuites: cipherSuites12,
	}, nil
}

// RequirePeer makes cfg refuse, during the handshake, a peer whose verified certificate does
// not name entity id in role (ETSI GS QKD 014 clause 4: the SAE checks the KME_ID of the
// server it talks to). An empty id accepts any ID in role.
func RequirePeer(cfg *tls.Config, role Role, id string) {
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		got, err := Identify(&cs)
		if err != nil {
			return err
		}
		if got.Role != role || (id != "" && got.ID != id) {
			return fmt.Errorf("pki: peer is %s %q, want %s %q", got.Role, got.ID, role, id)
		}
		return nil
	}
}

// CertPool reads the PEM certificates of caFile into a pool.
func CertPool(caFile string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("pki: CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

func loadPair(certFile, keyFile, caFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pki: load key pair %s: %w", certFile, err)
	}
	pool, err := CertPool(caFile)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return cert, pool, nil
}

// Identity is who a verified peer certificate names.
type Identity struct {
	ID   string
	Role Role
}

// Errors of Identify, for callers that map them to protocol answers (401 in ETSI 014).
var (
	ErrNoCertificate = errors.New("pki: no verified client certificate")
	ErrBadIdentity   = errors.New("pki: certificate does not follow the qkms identity convention")
)

// Identify returns the identity named by the verified leaf certificate of a connection
// (Subject CN = ID, Subject OU = role; see the package doc). It reads VerifiedChains only,
// so a certificate the handshake did not verify never yields an identity.
func Identify(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, ErrNoCertificate
	}
	leaf := cs.VerifiedChains[0][0]
	if len(leaf.Subject.OrganizationalUnit) != 1 {
		return Identity{}, fmt.Errorf("%w: want exactly one OU, got %d", ErrBadIdentity, len(leaf.Subject.OrganizationalUnit))
	}
	role := Role(leaf.Subject.OrganizationalUnit[0])
	if !role.Valid() {
		return Identity{}, fmt.Errorf("%w: unknown role %q", ErrBadIdentity, role)
	}
	if err := CheckID(leaf.Subject.CommonName); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrBadIdentity, err)
	}
	return Identity{ID: leaf.Subject.CommonName, Role: role}, nil
}
