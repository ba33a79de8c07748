package kms

import "fmt"

// Limits are the per-site bounds reported in the ETSI GS QKD 014 status object (clause 6.1)
// and enforced on every request. Sizes are in bits.
type Limits struct {
	KeySize          int `json:"key_size" yaml:"key_size"`                       // default key size
	MinKeySize       int `json:"min_key_size" yaml:"min_key_size"`               // smallest key size accepted
	MaxKeySize       int `json:"max_key_size" yaml:"max_key_size"`               // largest key size accepted
	MaxKeyCount      int `json:"max_key_count" yaml:"max_key_count"`             // stored key capacity reported in status
	MaxKeyPerRequest int `json:"max_key_per_request" yaml:"max_key_per_request"` // keys per enc_keys or dec_keys call
	// MaxSAEIDCount bounds additional_slave_SAE_IDs; 0 disables multicast (clause 6.1).
	MaxSAEIDCount int `json:"max_SAE_ID_count" yaml:"max_SAE_ID_count"`
}

// DefaultLimits are the limits of a Config that sets none.
func DefaultLimits() Limits {
	return Limits{
		KeySize:          256,
		MinKeySize:       64,
		MaxKeySize:       8192,
		MaxKeyCount:      100000,
		MaxKeyPerRequest: 128,
		MaxSAEIDCount:    16,
	}
}

// withDefaults returns DefaultLimits for all-zero limits, and otherwise fills zero fields from
// them, except MaxSAEIDCount, whose zero means "no multicast" (clause 6.1).
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l == (Limits{}) {
		return d
	}
	if l.KeySize == 0 {
		l.KeySize = d.KeySize
	}
	if l.MinKeySize == 0 {
		l.MinKeySize = d.MinKeySize
	}
	if l.MaxKeySize == 0 {
		l.MaxKeySize = d.MaxKeySize
	}
	if l.MaxKeyCount == 0 {
		l.MaxKeyCount = d.MaxKeyCount
	}
	if l.MaxKeyPerRequest == 0 {
		l.MaxKeyPerRequest = d.MaxKeyPerRequest
	}
	return l
}

// Validate reports limits that cannot work: sizes must be positive multiples of 8 with
// min <= default <= max.
func (l Limits) Validate() error {
	for _, s := range []struct {
		name string
		v    int
	}{{"key_size", l.KeySize}, {"min_key_size", l.MinKeySize}, {"max_key_size", l.MaxKeySize}} {
		if s.v <= 0 || s.v%8 != 0 {
			return fmt.Errorf("kms: limits: %s %d must be a positive multiple of 8", s.name, s.v)
		}
	}
	if l.MinKeySize > l.KeySize || l.KeySize > l.MaxKeySize {
		return fmt.Errorf("kms: limits: need min_key_size %d <= key_size %d <= max_key_size %d",
			l.MinKeySize, l.KeySize, l.MaxKeySize)
	}
	if l.MaxKeyPerRequest <= 0 || l.MaxKeyCount <= 0 {
		return fmt.Errorf("kms: limits: max_key_per_request %d and max_key_count %d must be positive",
			l.MaxKeyPerRequest, l.MaxKeyCount)
	}
	if l.MaxSAEIDCount < 0 {
		return fmt.Errorf("kms: limits: max_SAE_ID_count %d must not be negative", l.MaxSAEIDCount)
	}
	return nil
}
