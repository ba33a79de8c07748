package kms_test

import (
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// TestRejectedIssueConsumesNothing: every refused Get key leaves the pool counters, the
// stored_key_count and the stored material unchanged (invariant 4), with the sentinel and,
// where ETSI 014 prescribes one, the message the SAE will read.
func TestRejectedIssueConsumesNothing(t *testing.T) {
	lim := kms.Limits{KeySize: 256, MinKeySize: 64, MaxKeySize: 1024, MaxKeyCount: 1000, MaxKeyPerRequest: 4, MaxSAEIDCount: 1}
	tests := []struct {
		name   string
		edit   func(c *kms.IssueCmd)
		want   error
		msg    string
		time   time.Time
		noPool bool
		// applyOnly: a check only Apply makes (it needs the store or the command's own fields).
		applyOnly bool
	}{
		{name: "size not multiple of 8", edit: func(c *kms.IssueCmd) { c.Bits = 260 }, want: kms.ErrBadRequest, msg: "size shall be a multiple of 8"},
		{name: "size below min", edit: func(c *kms.IssueCmd) { c.Bits = 56 }, want: kms.ErrBadRequest, msg: "size 56 is below min_key_size 64"},
		{name: "size above max", edit: func(c *kms.IssueCmd) { c.Bits = 1032 }, want: kms.ErrBadRequest, msg: "size 1032 exceeds max_key_size 1024"},
		{name: "zero keys", edit: func(c *kms.IssueCmd) { c.KeyIDs = nil }, want: kms.ErrBadRequest, msg: "number 0 must be at least 1"},
		{name: "too many keys", edit: func(c *kms.IssueCmd) { c.KeyIDs = []string{"1", "2", "3", "4", "5"} }, want: kms.ErrBadRequest, msg: "number 5 exceeds max_key_per_request 4"},
		{name: "duplicate key IDs", edit: func(c *kms.IssueCmd) { c.KeyIDs = []string{"1", "1"} }, want: kms.ErrBadRequest, applyOnly: true},
		{name: "key ID in use", edit: func(c *kms.IssueCmd) { c.KeyIDs = []string{"used"} }, want: kms.ErrBadRequest, applyOnly: true},
		{name: "unknown slave", edit: func(c *kms.IssueCmd) { c.Slaves = []string{"SAE-X"} }, want: kms.ErrUnknownSAE},
		{name: "unknown additional slave", edit: func(c *kms.IssueCmd) { c.Slaves = []string{"SAE-B1", "SAE-X"} }, want: kms.ErrUnknownSAE},
		{name: "unknown master", edit: func(c *kms.IssueCmd) { c.Master = "SAE-X" }, want: kms.ErrUnknownSAE},
		{name: "master of another KME", edit: func(c *kms.IssueCmd) { c.Master = "SAE-B2" }, want: kms.ErrUnauthorized},
		{name: "slave at this KME", edit: func(c *kms.IssueCmd) { c.Slaves = []string{"SAE-A2"} }, want: kms.ErrBadRequest},
		{name: "master as slave", edit: func(c *kms.IssueCmd) { c.Slaves = []string{"SAE-B1", "SAE-A1"} }, want: kms.ErrBadRequest},
		{name: "slaves at two KMEs", edit: func(c *kms.IssueCmd) { c.Slaves = []string{"SAE-B1", "SAE-C1"} }, want: kms.ErrBadRequest},
		{name: "too many additional slaves", edit: func(c *kms.IssueCmd) { c.Slaves = []string{"SAE-B1", "SAE-B2", "SAE-B3"} }, want: kms.ErrBadRequest, msg: "2 additional_slave_SAE_IDs exceed max_SAE_ID_count 1"},
		{name: "slave named twice", edit: func(c *kms.IssueCmd) { c.Slaves = []string{"SAE-B1", "SAE-B1"} }, want: kms.ErrBadRequest},
		{name: "no slave", edit: func(c *kms.IssueCmd) { c.Slaves = nil }, want: kms.ErrBadRequest},
		{name: "wrong peer", edit: func(c *kms.IssueCmd) { c.Peer = kmeC }, want: kms.ErrBadRequest, applyOnly: true},
		{name: "wrong self", edit: func(c *kms.IssueCmd) { c.Self = kmeB }, want: kms.ErrBadRequest, applyOnly: true},
		{name: "expiry in the past", edit: func(c *kms.IssueCmd) { c.Expires = t0.Add(-time.Second) }, want: kms.ErrBadRequest, applyOnly: true},
		{name: "unknown provenance", edit: func(c *kms.IssueCmd) { c.Provenance = "magic" }, want: kms.ErrBadRequest, applyOnly: true},
		{name: "not enough key", edit: func(c *kms.IssueCmd) { c.Bits = 1024; c.KeyIDs = []string{"1", "2", "3"} }, want: kms.ErrNotEnoughKey, applyOnly: true},
		{name: "no pool", edit: func(c *kms.IssueCmd) {}, want: kms.ErrNotEnoughKey, noPool: true, applyOnly: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLink(t, lim)
			if !tc.noPool {
				l.ingest(200, true) // A owns 200 bytes
				l.ingest(200, true)
				pre := l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 64)
				pre.Issue.KeyIDs = []string{"used"}
				l.must(l.a, pre)
			}
			st0, err := l.a.m.Status(l.a.tx, "SAE-A1", "SAE-B1")
			if err != nil {
				t.Fatal(err)
			}
			before := l.a.tx.Dump()
			c := l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 2, 256)
			tc.edit(c.Issue)
			r := l.apply(l.a, c)
			wantErr(t, r.Err, tc.want)
			if tc.msg != "" && kms.Message(r.Err) != tc.msg {
				t.Fatalf("message %q, want %q", kms.Message(r.Err), tc.msg)
			}
			if len(r.Keys) != 0 || len(r.Reservations) != 0 {
				t.Fatal("rejected issue returned keys")
			}
			st1, _ := l.a.m.Status(l.a.tx, "SAE-A1", "SAE-B1")
			if st0 != st1 || l.a.tx.Dump() != before {
				t.Fatalf("rejected issue changed the store (stored_key_count %d -> %d)", st0.StoredKeyCount, st1.StoredKeyCount)
			}
			// The pre-proposal check agrees with Apply on what it can see without the store.
			if !tc.applyOnly {
				in := c.Issue
				var slave string
				var extra []string
				if len(in.Slaves) > 0 {
					slave, extra = in.Slaves[0], in.Slaves[1:]
				}
				wantErr(t, l.a.m.ValidateIssue(in.Master, slave, len(in.KeyIDs), in.Bits, extra), tc.want)
			}
		})
	}
}

// TestStatus: the status object reports the limits and the keys this site can issue now.
func TestStatus(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(1000, true)
	st, err := l.a.m.Status(l.a.tx, "SAE-A1", "SAE-B2")
	if err != nil {
		t.Fatal(err)
	}
	d := kms.DefaultLimits()
	want := kms.StatusInfo{
		SourceKMEID: kmeA, TargetKMEID: kmeB, MasterSAEID: "SAE-A1", SlaveSAEID: "SAE-B2",
		KeySize: d.KeySize, StoredKeyCount: 1000 * 8 / d.KeySize, MaxKeyCount: d.MaxKeyCount,
		MaxKeyPerRequest: d.MaxKeyPerRequest, MaxKeySize: d.MaxKeySize, MinKeySize: d.MinKeySize,
		MaxSAEIDCount: d.MaxSAEIDCount,
	}
	if st != want {
		t.Fatalf("status %+v\nwant %+v", st, want)
	}
	if r := l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 2, d.KeySize); r.Err != nil {
		t.Fatal(r.Err)
	}
	st, _ = l.a.m.Status(l.a.tx, "SAE-A1", "SAE-B2")
	if st.StoredKeyCount != want.StoredKeyCount-2 {
		t.Fatalf("stored_key_count %d after issuing 2, want %d", st.StoredKeyCount, want.StoredKeyCount-2)
	}
	for _, tc := range []struct {
		master, slave string
		want          error
	}{
		{"SAE-A1", "SAE-X", kms.ErrUnknownSAE},
		{"SAE-A1", "SAE-A2", kms.ErrBadRequest},
		{"SAE-B1", "SAE-B2", kms.ErrUnauthorized},
	} {
		_, err := l.a.m.Status(l.a.tx, tc.master, tc.slave)
		wantErr(t, err, tc.want)
	}
}

// TestConfigValidate: limits that cannot work are refused.
func TestConfigValidate(t *testing.T) {
	reg := registry(t)
	for _, tc := range []struct {
		name string
		cfg  kms.Config
		ok   bool
	}{
		{"defaults", kms.Config{Self: kmeA, Registry: reg}, true},
		{"no self", kms.Config{Registry: reg}, false},
		{"no registry", kms.Config{Self: kmeA}, false},
		{"odd key size", kms.Config{Self: kmeA, Registry: reg, Limits: kms.Limits{KeySize: 100}}, false},
		{"min above default", kms.Config{Self: kmeA, Registry: reg, Limits: kms.Limits{KeySize: 64, MinKeySize: 128}}, false},
		{"no multicast", kms.Config{Self: kmeA, Registry: reg, Limits: kms.Limits{KeySize: 128}}, true},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v", tc.name, err)
		}
	}
	m := kms.NewMachine(kms.Config{Self: kmeA, Registry: reg, Limits: kms.Limits{KeySize: 128}})
	if m.Limits().MaxSAEIDCount != 0 || m.Limits().MaxKeySize != kms.DefaultLimits().MaxKeySize {
		t.Fatalf("limits %+v", m.Limits())
	}
}
