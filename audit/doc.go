// Package audit owns the offline side of a site's audit trail (DESIGN.md invariant 5): the
// export format, the messages the site signs, offline verification of an export, and the
// two-site fingerprint comparison. The trail itself is written by the kms core (kms/audit.go).
//
// Export format: JSON Lines. Each line is one kms.AuditEntry in Seq order from 1, checkpoint
// entries inline where the log put them, and the last line is the export's signed end
// ({"end": {...}}, an End): the site's signature over the Seq and hash of the last entry
// exported. Without the end line a verifier could not tell an export cut short from a
// complete one, since a prefix of a hash chain is itself a valid chain.
//
// What verification proves: every entry's hash is SHA-256 of its canonical encoding, which
// begins with the previous entry's hash (kms.AppendAuditCanonical), so editing, deleting,
// inserting or reordering any entry breaks the chain at that entry; the checkpoints and the end
// line carry ML-DSA-65 signatures (FIPS 204) of the site over a chain head, so the chain cannot
// be rebuilt by someone who edits it and recomputes the hashes. Verify reports the line and
// Seq of the first entry that fails.
package audit
