package kms

import (
	"fmt"
	"sort"
)

// Registry says which KME serves each SAE. It is loaded from configuration by the caller and is
// immutable afterwards, so it is safe for concurrent readers. Both sites must load the same
// mapping: the issuing site picks the peer pool from the slave's KME, and the fetching site
// checks that the slaves named in a pushed reservation are its own.
type Registry struct {
	kme map[string]string
}

// NewRegistry builds a registry from SAE ID -> KME ID.
func NewRegistry(saeToKME map[string]string) (*Registry, error) {
	r := &Registry{kme: make(map[string]string, len(saeToKME))}
	for sae, kme := range saeToKME {
		if sae == "" || kme == "" {
			return nil, fmt.Errorf("kms: registry: empty SAE ID or KME ID (%q -> %q)", sae, kme)
		}
		r.kme[sae] = kme
	}
	return r, nil
}

// KME returns the KME serving sae.
func (r *Registry) KME(sae string) (string, bool) {
	if r == nil {
		return "", false
	}
	k, ok := r.kme[sae]
	return k, ok
}

// SAEs lists, sorted, the SAEs served by kme.
func (r *Registry) SAEs(kme string) []string {
	if r == nil {
		return nil
	}
	var out []string
	for s, k := range r.kme {
		if k == kme {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
