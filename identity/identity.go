// Package identity owns a site's signing identity: the ML-DSA-65 key pair (FIPS 204, through
// cloudflare/circl) with which the site's leader signs the checkpoints of its audit trail and
// its audit exports, how the key pair is stored on disk, and the key ID that names a public key
// in signed records. Auditors receive only the public key file and verify offline.
//
// Files are PEM. The private key is kept as its 32-byte seed (FIPS 204 ML-DSA.KeyGen_internal
// expands it deterministically), block type "ML-DSA-65 SEED", mode 0600. The public key is the
// FIPS 204 encoding (1952 bytes), block type "ML-DSA-65 PUBLIC KEY", written beside the private
// key with the extension ".pub". All nodes of a site should share one key file (like the master
// key); a verifier accepts several public keys when they do not.
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

const (
	seedBlock   = "ML-DSA-65 SEED"
	publicBlock = "ML-DSA-65 PUBLIC KEY"
)

// ErrBadKeyFile is a key file that does not hold a key of the expected form.
var ErrBadKeyFile = errors.New("identity: not an ML-DSA-65 key file")

// Signer is a site's signing key. It is safe for concurrent use.
type Signer struct {
	sk *mldsa65.PrivateKey
	pk *mldsa65.PublicKey
	id string
}

// Generate makes a fresh signing key.
func Generate() (*Signer, error) {
	var seed [mldsa65.SeedSize]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("identity: generate: %w", err)
	}
	s := fromSeed(&seed)
	clear(seed[:])
	return s, nil
}

func fromSeed(seed *[mldsa65.SeedSize]byte) *Signer {
	pk, sk := mldsa65.NewKeyFromSeed(seed)
	return &Signer{sk: sk, pk: pk, id: KeyID(pk)}
}

// Public is the verification key.
func (s *Signer) Public() *mldsa65.PublicKey { return s.pk }

// KeyID names the verification key in signed records.
func (s *Signer) KeyID() string { return s.id }

// Sign signs msg under the FIPS 204 context string ctx (domain separation between uses),
// with hedged (randomized) signing.
func (s *Signer) Sign(msg []byte, ctx string) ([]byte, error) {
	sig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(s.sk, msg, []byte(ctx), true, sig); err != nil {
		return nil, fmt.Errorf("identity: sign: %w", err)
	}
	return sig, nil
}

// Verify checks sig over msg under ctx.
func Verify(pk *mldsa65.PublicKey, msg []byte, ctx string, sig []byte) bool {
	return mldsa65.Verify(pk, msg, []byte(ctx), sig)
}

// KeyID is the first 8 bytes of SHA-256 of the public key's encoding, in hex.
func KeyID(pk *mldsa65.PublicKey) string {
	h := sha256.Sum256(pk.Bytes())
	return hex.EncodeToString(h[:8])
}

// PublicKeyPath is where the public key of the private key file at path is written.
func PublicKeyPath(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".pub"
}

// LoadOrCreate loads the signing key at path, or generates one there (and its public key
// beside it) when the file does not exist. Creation is atomic (a complete file is linked into
// place), so nodes starting together from one directory end up with the same key.
func LoadOrCreate(path string) (*Signer, error) {
	s, err := Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	g, err := Generate()
	if err != nil {
		return nil, err
	}
	var seed [mldsa65.SeedSize]byte
	copy(seed[:], g.sk.Seed())
	data := pem.EncodeToMemory(&pem.Block{Type: seedBlock, Bytes: seed[:]})
	clear(seed[:])
	tmp, err := os.CreateTemp(filepath.Dir(path), ".identity-*")
	if err != nil {
		return nil, fmt.Errorf("identity: create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	clear(data)
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		return nil, fmt.Errorf("identity: write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("identity: create %s: %w", path, err)
	}
	s, err = Load(path) // another node may have won the race: use its key
	if err != nil {
		return nil, err
	}
	if err := WritePublicKey(PublicKeyPath(path), s.pk); err != nil {
		return nil, err
	}
	return s, nil
}

// Load reads a signing key file.
func Load(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer clear(data)
	b, _ := pem.Decode(data)
	if b == nil || b.Type != seedBlock || len(b.Bytes) != mldsa65.SeedSize {
		return nil, fmt.Errorf("identity: %s: %w", path, ErrBadKeyFile)
	}
	var seed [mldsa65.SeedSize]byte
	copy(seed[:], b.Bytes)
	clear(b.Bytes)
	s := fromSeed(&seed)
	clear(seed[:])
	return s, nil
}

// WritePublicKey writes pk to path (mode 0644: it is public).
func WritePublicKey(path string, pk *mldsa65.PublicKey) error {
	data := pem.EncodeToMemory(&pem.Block{Type: publicBlock, Bytes: pk.Bytes()})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("identity: write public key: %w", err)
	}
	return nil
}

// ParsePublicKey reads a public key written by WritePublicKey.
func ParsePublicKey(data []byte) (*mldsa65.PublicKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != publicBlock || len(b.Bytes) != mldsa65.PublicKeySize {
		return nil, ErrBadKeyFile
	}
	pk := new(mldsa65.PublicKey)
	if err := pk.UnmarshalBinary(b.Bytes); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKeyFile, err)
	}
	return pk, nil
}

// LoadPublicKey reads a public key file.
func LoadPublicKey(path string) (*mldsa65.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	pk, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", path, err)
	}
	return pk, nil
}
