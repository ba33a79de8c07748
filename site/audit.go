package site

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/audit"
	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/store"
)

// AuditConfig configures the site's audit trail (kms/audit.go, package audit).
type AuditConfig struct {
	// KeyFile holds the site's audit key (64 hex characters, like the master key), which keys
	// the fingerprints of delivered keys; an auditor given both sites' audit keys can show
	// that both delivered the same key (kms/audit_fingerprint.go). Empty: the key is derived
	// from the master key with HKDF-SHA256 under the label "qkms audit key v1", so it is the
	// same on every node and reveals nothing about the master key; set a file to hand the
	// audit key to auditors without the master key's operators deriving it for them.
	KeyFile string `yaml:"key_file"`
	// SigningKeyFile holds the site's ML-DSA-65 signing key (package identity) for checkpoints
	// and exports; created, with its public key beside it (".pub"), when absent. Empty:
	// "<kme_id>.audit.key" in the directory of tls.cert, so the public key sits next to the
	// certificates for auditors. Every node of a site should use the same file.
	SigningKeyFile string `yaml:"signing_key_file"`
	// CheckpointEvery is the number of entries after which the leader signs the head
	// (default 1000); CheckpointInterval bounds the time an entry waits for a signature
	// (default 30s).
	CheckpointEvery    int           `yaml:"checkpoint_every"`
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
}

// Defaults of AuditConfig.
const (
	defaultCheckpointEvery    = 1000
	defaultCheckpointInterval = 30 * time.Second
	auditTick                 = time.Second
	// auditPage bounds the entries read in one store transaction by a query or an export, so a
	// slow client does not hold a read transaction open.
	auditPage = 1024
)

// auditState is a node's audit identity and its checkpoint progress.
type auditState struct {
	key    *kms.AuditKey
	signer *identity.Signer
	every  uint64
	period time.Duration

	mu       sync.Mutex // guards the two below: the loop and a forced checkpoint may overlap
	lastSeq  uint64     // last entry this node checkpointed
	lastTime time.Time  // when
}

// progress returns the last checkpoint this node made (0 and the zero time if none).
func (a *auditState) progress() (uint64, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastSeq, a.lastTime
}

func (a *auditState) setProgress(seq uint64, at time.Time) {
	a.mu.Lock()
	a.lastSeq, a.lastTime = seq, at
	a.mu.Unlock()
}

// openAudit loads the audit key and the signing key of cfg; master is the site's master key.
func openAudit(cfg Config, master []byte) (*auditState, error) {
	a := cfg.Audit
	var secret []byte
	var err error
	if a.KeyFile != "" {
		if secret, err = store.LoadMasterKey(a.KeyFile); err != nil {
			return nil, fmt.Errorf("site: audit key: %w", err)
		}
	} else if secret, err = hkdf.Key(sha256.New, master, nil, "qkms audit key v1", kms.AuditKeySize); err != nil {
		return nil, fmt.Errorf("site: derive audit key: %w", err)
	}
	key, err := kms.NewAuditKey(secret)
	clear(secret)
	if err != nil {
		return nil, fmt.Errorf("site: %w", err)
	}
	signer, err := identity.LoadOrCreate(signingKeyPath(cfg))
	if err != nil {
		return nil, fmt.Errorf("site: audit signing key: %w", err)
	}
	st := &auditState{key: key, signer: signer, every: uint64(a.CheckpointEvery), period: a.CheckpointInterval}
	if st.every == 0 {
		st.every = defaultCheckpointEvery
	}
	if st.period == 0 {
		st.period = defaultCheckpointInterval
	}
	return st, nil
}

// signingKeyPath is the site's ML-DSA-65 signing key file (audit.signing_key_file or its
// default beside the KME certificate).
func signingKeyPath(cfg Config) string {
	if cfg.Audit.SigningKeyFile != "" {
		return cfg.Audit.SigningKeyFile
	}
	return filepath.Join(filepath.Dir(cfg.TLS.Cert), cfg.KMEID+".audit.key")
}

// AuditPublicKey is the public key that verifies this node's checkpoints and exports.
func (n *Node) AuditPublicKey() *mldsa65.PublicKey { return n.audit.signer.Public() }

// auditLoop checkpoints the trail while this node leads the site. A new leader starts from
// nothing in memory: it signs at once whatever the trail holds past its last checkpoint.
func (n *Node) auditLoop() {
	t := time.NewTicker(min(auditTick, n.audit.period))
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if !n.rn.IsLeader() {
			n.audit.setProgress(0, time.Time{})
			continue
		}
		if err := n.checkpoint(n.ctx, false); err != nil {
			n.log.Warn("audit checkpoint", "err", err)
		}
	}
}

// checkpoint signs the head of the trail and records the signature through the log, when the
// head is not a checkpoint already and (unless force) enough entries or time went by.
func (n *Node) checkpoint(ctx context.Context, force bool) error {
	a := n.audit
	var seq uint64
	var head []byte
	var headEvent kms.AuditEvent
	err := n.db.View(func(tx kms.Tx) error {
		var err error
		if seq, head, err = tx.AuditHead(); err != nil || seq == 0 {
			return err
		}
		return tx.Audit(seq, func(e *kms.AuditEntry) bool { headEvent = e.Event; return false })
	})
	if err != nil || seq == 0 || headEvent == kms.EventCheckpoint {
		return err
	}
	if lastSeq, lastTime := a.progress(); !force && seq-lastSeq < a.every && time.Since(lastTime) < a.period {
		return nil
	}
	sig, err := a.signer.Sign(audit.CheckpointMessage(n.cfg.KMEID, seq, head), audit.CheckpointContext)
	if err != nil {
		return err
	}
	_, err = n.propose(ctx, &kms.Command{Checkpoint: &kms.CheckpointCmd{
		KME: n.cfg.KMEID, Seq: seq, Head: head, Signer: a.signer.KeyID(), Signature: sig}})
	if err != nil {
		return fmt.Errorf("site: record checkpoint of entry %d: %w", seq, err)
	}
	a.setProgress(seq, time.Now())
	return nil
}

// recordAdmin writes an admin action (or a refused admin call) to the audit trail. A failure
// is logged, not returned: the caller's answer does not depend on it.
func (n *Node) recordAdmin(ctx context.Context, action, actor, outcome, detail string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := n.propose(ctx, &kms.Command{Admin: &kms.AdminCmd{Action: action, Actor: actor, Outcome: outcome, Detail: detail}})
	if err != nil {
		n.log.Warn("record admin action in the audit trail", "action", action, "actor", actor, "err", err)
	}
}

// readAudit calls fn with pages of entries from Seq from, each page read in its own
// linearizable read, until fn returns false or the trail ends.
func (n *Node) readAudit(ctx context.Context, from uint64, fn func([]*kms.AuditEntry) (bool, error)) error {
	from = max(from, 1)
	for {
		var page []*kms.AuditEntry
		err := n.rn.Read(ctx, func(tx kms.Tx) error {
			return tx.Audit(from, func(e *kms.AuditEntry) bool {
				page = append(page, e)
				return len(page) < auditPage
			})
		})
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		more, err := fn(page)
		if err != nil || !more || len(page) < auditPage {
			return err
		}
		from = page[len(page)-1].Seq + 1
	}
}

// auditMatch applies the filters of QueryAudit.
func auditMatch(req *keyspb.QueryAuditRequest, e *kms.AuditEntry) bool {
	if req.GetEvent() != "" && string(e.Event) != req.GetEvent() {
		return false
	}
	if s := req.GetSaeId(); s != "" && e.Master != s && e.SAE != s && e.Actor != s && !slices.Contains(e.Slaves, s) {
		return false
	}
	if req.GetSince() != nil && e.Time.Before(req.GetSince().AsTime()) {
		return false
	}
	if req.GetUntil() != nil && !e.Time.Before(req.GetUntil().AsTime()) {
		return false
	}
	return true
}

func (s adminService) QueryAudit(req *keyspb.QueryAuditRequest, stream grpc.ServerStreamingServer[keyspb.AuditEntry]) error {
	ctx := stream.Context()
	if err := s.requireAdmin(ctx); err != nil {
		return err
	}
	if ev := req.GetEvent(); ev != "" && !slices.Contains(kms.AuditEvents, kms.AuditEvent(ev)) {
		return status.Errorf(codes.InvalidArgument, "unknown event %q; events are %v", ev, kms.AuditEvents)
	}
	if req.GetLimit() < 0 {
		return status.Error(codes.InvalidArgument, "limit must not be negative")
	}
	sent := int64(0)
	err := s.n.readAudit(ctx, 1, func(page []*kms.AuditEntry) (bool, error) {
		for _, e := range page {
			if !auditMatch(req, e) {
				continue
			}
			js, err := jsonEntry(e)
			if err != nil {
				return false, err
			}
			if err := stream.Send(&keyspb.AuditEntry{Index: e.Seq, Json: js}); err != nil {
				return false, err
			}
			if sent++; req.GetLimit() > 0 && sent >= req.GetLimit() {
				return false, nil
			}
		}
		return true, nil
	})
	return auditStatus(err)
}

func (s adminService) ExportAudit(req *keyspb.ExportAuditRequest, stream grpc.ServerStreamingServer[keyspb.AuditChunk]) error {
	ctx := stream.Context()
	if err := s.requireAdmin(ctx); err != nil {
		return err
	}
	if req.GetFromIndex() > 1 {
		return status.Error(codes.InvalidArgument, "exports start at entry 1 (from_index 0 or 1), so that they verify on their own")
	}
	w := audit.NewWriter(chunkWriter{stream})
	err := s.n.readAudit(ctx, 1, func(page []*kms.AuditEntry) (bool, error) {
		for _, e := range page {
			if err := w.Entry(e); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return auditStatus(err)
	}
	signer := s.n.audit.signer
	err = w.Close(s.n.cfg.KMEID, time.Now(), func(msg []byte) (string, []byte, error) {
		sig, err := signer.Sign(msg, audit.EndContext)
		return signer.KeyID(), sig, err
	})
	return auditStatus(err)
}

// chunkWriter sends what an audit.Writer writes as AuditChunks (it buffers 64 KiB).
type chunkWriter struct {
	stream grpc.ServerStreamingServer[keyspb.AuditChunk]
}

func (c chunkWriter) Write(p []byte) (int, error) {
	if err := c.stream.Send(&keyspb.AuditChunk{Data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

var _ io.Writer = chunkWriter{}

func auditStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "audit trail: %v", err)
}

func jsonEntry(e *kms.AuditEntry) ([]byte, error) { return json.Marshal(e) }
