// Package pki owns the mutual-TLS identities of qkms: a development certificate authority,
// the certificates it issues to KMEs, SAEs and administrators, the TLS configurations every
// listener and client of qkms uses, and the mapping from a verified peer certificate to an
// identity.
//
// Identity convention (the single place it is defined; README copies it):
//
//   - Subject CommonName is the entity ID: the SAE_ID of an SAE, the KME_ID of a KME, the
//     administrator's name for an admin.
//   - Subject OrganizationalUnit holds exactly one role: "sae", "kme" or "admin".
//   - KME certificates are both server and client certificates (ExtKeyUsage serverAuth and
//     clientAuth): a KME serves SAEs and talks to its peer KME. They carry the SANs
//     127.0.0.1, ::1 and localhost plus any extra hosts, so standard HTTPS clients (curl)
//     verify the hostname.
//   - SAE and admin certificates are client certificates only.
//
// ETSI GS QKD 014 V1.1.1 (clause 4 and clause 5.1) requires HTTPS with mutual authentication
// and leaves the ID format open: the KME derives the caller's SAE_ID from its client
// certificate, never from the request, which is what Identify does. TLS 1.3 is preferred and
// TLS 1.2 accepted, restricted to ECDHE key exchange with AEAD ciphers.
//
// The development PKI written by WriteDevPKI is for demos and tests: its CA key sits beside
// the certificates. Production deployments bring certificates from their own CA following
// the same convention.
package pki
