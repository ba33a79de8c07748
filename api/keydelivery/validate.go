package keydelivery

import (
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/pki"
)

// Request checks run before the Service is called, so a refused request consumes nothing
// (DESIGN.md invariant 4). They mirror api/etsi014's decoding rules (ETSI GS QKD 014
// clause 6.2 and 6.4); limits of the site (max_key_per_request, key sizes, max_SAE_ID_count)
// are the Service's to enforce.

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func checkSAE(field, id string) error {
	if err := pki.CheckID(id); err != nil {
		return invalid("%s: %v; give the SAE_ID as registered at the KMEs", field, err)
	}
	return nil
}

// checkSize checks a key size in bits: 0 means the default key_size.
func checkSize(field string, size int32) error {
	switch {
	case size < 0:
		return invalid("%s shall be a positive number of bits (0 for the default key_size)", field)
	case size%8 != 0:
		return invalid("%s: size shall be a multiple of 8", field)
	}
	return nil
}

func checkSlaves(slave string, additional []string) error {
	if err := checkSAE("slave_sae_id", slave); err != nil {
		return err
	}
	if len(additional) > maxListLen {
		return invalid("additional_slave_sae_ids: %d entries exceed %d", len(additional), maxListLen)
	}
	seen := make(map[string]bool, len(additional)+1)
	seen[slave] = true
	for _, id := range additional {
		if err := checkSAE("additional_slave_sae_ids", id); err != nil {
			return err
		}
		if seen[id] {
			return invalid("additional_slave_sae_ids: SAE %q named twice", id)
		}
		seen[id] = true
	}
	return nil
}

func checkGetKey(req *keyspb.GetKeyRequest) (KeyRequest, error) {
	if err := checkSlaves(req.GetSlaveSaeId(), req.GetAdditionalSlaveSaeIds()); err != nil {
		return KeyRequest{}, err
	}
	n := req.GetNumber()
	if n < 0 || n > maxNumber {
		return KeyRequest{}, invalid("number shall be a positive integer (0 means 1)")
	}
	if err := checkSize("size", req.GetSize()); err != nil {
		return KeyRequest{}, err
	}
	return KeyRequest{Number: max(1, int(n)), Size: int(req.GetSize()), AdditionalSlaves: req.GetAdditionalSlaveSaeIds()}, nil
}

func checkGetKeyWithIDs(req *keyspb.GetKeyWithIDsRequest) error {
	if err := checkSAE("master_sae_id", req.GetMasterSaeId()); err != nil {
		return err
	}
	ids := req.GetKeyIds()
	if len(ids) == 0 {
		return invalid("key_ids shall list at least one key ID")
	}
	if len(ids) > maxListLen {
		return invalid("key_ids: %d entries exceed %d; ask in several requests", len(ids), maxListLen)
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if err := checkKeyID(id); err != nil {
			return err
		}
		if seen[id] {
			return invalid("key ID %q requested twice", id)
		}
		seen[id] = true
	}
	return nil
}

// checkKeyID is ETSI 014's key_ID rule as api/etsi014 applies it: a non-empty UTF-8 string
// without control characters, of bounded length.
func checkKeyID(id string) error {
	if id == "" || len(id) > pki.MaxIDLen || !utf8.ValidString(id) {
		return invalid("key ID shall be a non-empty UTF-8 string of at most %d bytes", pki.MaxIDLen)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return invalid("key ID shall not contain control characters")
		}
	}
	return nil
}

func checkProvenance(p keyspb.Provenance) error {
	if _, ok := keyspb.Provenance_name[int32(p)]; !ok {
		return invalid("min_provenance %d is not a known provenance", int32(p))
	}
	return nil
}

func checkStreamID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || id.String() != s {
		return uuid.UUID{}, invalid("stream_id shall be the lower-case UUID the master's StreamKeys answered with")
	}
	return id, nil
}
