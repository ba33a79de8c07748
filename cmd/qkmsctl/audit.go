package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/audit"
	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/kms"
)

// newAuditCmd reads the site's tamper-evident audit trail (DESIGN.md invariant 5) and
// verifies exports of it offline (package audit).
func newAuditCmd(o *options) *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "the site's audit trail: list, export, verify"}
	c.AddCommand(newAuditListCmd(o), newAuditExportCmd(o), newAuditVerifyCmd(o))
	return c
}

func newAuditListCmd(o *options) *cobra.Command {
	var sae, event, since, until string
	var limit int64
	c := &cobra.Command{
		Use:   "list",
		Short: "entries of the trail, filtered by SAE, event and time (--json: one entry per line)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &keyspb.QueryAuditRequest{SaeId: sae, Event: event, Limit: limit}
			now := time.Now()
			var err error
			if req.Since, err = parseWhen(since, now); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if req.Until, err = parseWhen(until, now); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				st, err := a.QueryAudit(ctx, req)
				if err != nil {
					return err
				}
				w := bufio.NewWriter(cmd.OutOrStdout())
				defer w.Flush()
				var t *table
				if !o.json {
					t = newTable(w, "SEQ", "TIME", "EVENT", "PEER", "SAE", "KEYS", "BYTES", "DETAIL")
				}
				for {
					m, err := st.Recv()
					if err == io.EOF {
						break
					}
					if err != nil {
						return err
					}
					if o.json {
						w.Write(m.Json)
						w.WriteByte('\n')
						continue
					}
					var e kms.AuditEntry
					if err := json.Unmarshal(m.Json, &e); err != nil {
						return fmt.Errorf("entry %d from the site is not an audit entry (%v); the server may be newer than qkmsctl", m.Index, err)
					}
					t.row(strconv.FormatUint(e.Seq, 10), e.Time.UTC().Format(time.RFC3339), string(e.Event), orDash(e.Peer),
						orDash(entrySAE(&e)), keysCell(e.KeyIDs), orDash(bytesCell(e.Bytes)), orDash(entryDetail(&e)))
				}
				if t != nil {
					return t.flush()
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&sae, "sae", "", "only entries naming this SAE (master, slave, fetching SAE or actor)")
	c.Flags().StringVar(&event, "event", "", "only this event")
	c.Flags().StringVar(&since, "since", "", "only entries at or after this time (RFC 3339, or a duration ago such as 1h)")
	c.Flags().StringVar(&until, "until", "", "only entries before this time (RFC 3339, or a duration ago)")
	c.Flags().Int64Var(&limit, "limit", 0, "at most this many entries (0: all)")
	c.RegisterFlagCompletionFunc("event", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var evs []string
		for _, e := range kms.AuditEvents {
			evs = append(evs, string(e))
		}
		return evs, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

// parseWhen reads an RFC 3339 time, or a duration meaning that long before now.
func parseWhen(s string, now time.Time) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return timestamppb.New(t), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return timestamppb.New(now.Add(-d)), nil
	}
	return nil, fmt.Errorf("%q is neither an RFC 3339 time (2025-03-01T12:00:00Z) nor a duration (90m)", s)
}

func entrySAE(e *kms.AuditEntry) string {
	switch {
	case e.SAE != "":
		return e.SAE
	case e.Actor != "":
		return e.Actor
	case e.Master != "":
		return e.Master + " -> " + strings.Join(e.Slaves, ",")
	}
	return ""
}

func keysCell(ids []string) string {
	switch len(ids) {
	case 0:
		return "-"
	case 1:
		return ids[0]
	}
	return fmt.Sprintf("%s (+%d)", ids[0], len(ids)-1)
}

func bytesCell(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

func entryDetail(e *kms.AuditEntry) string {
	if cp := e.Checkpoint; cp != nil {
		return fmt.Sprintf("signed entry %d by %s", cp.Seq, cp.Signer)
	}
	if len(e.Blocks) > 0 && e.Detail == "" {
		return "block " + strings.Join(e.Blocks, ",")
	}
	return e.Detail
}

func newAuditExportCmd(o *options) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "export [--out FILE]",
		Short: "the whole trail as JSON Lines with the site's signed end line, for offline verification",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || out == "-" {
				return o.export(cmd, cmd.OutOrStdout())
			}
			// Write beside the target and rename, so an interrupted export leaves no file that
			// looks complete.
			f, err := os.CreateTemp(filepath.Dir(out), ".qkmsctl-export-*")
			if err != nil {
				return fmt.Errorf("create export file: %w", err)
			}
			defer os.Remove(f.Name())
			if err := o.export(cmd, f); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write export file: %w", err)
			}
			if err := os.Rename(f.Name(), out); err != nil {
				return fmt.Errorf("write export file: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exported to %s; check it with `qkmsctl audit verify --file %s`\n", out, out)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "out", "o", "", "file to write (default: standard output)")
	return c
}

// export streams the site's export into w.
func (o *options) export(cmd *cobra.Command, w io.Writer) error {
	return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
		st, err := a.ExportAudit(ctx, &keyspb.ExportAuditRequest{})
		if err != nil {
			return err
		}
		for {
			m, err := st.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if _, err := w.Write(m.Data); err != nil {
				return fmt.Errorf("write export: %w", err)
			}
		}
	})
}

// verifyResult is `audit verify --json`.
type verifyResult struct {
	OK          bool              `json:"ok"`
	KME         string            `json:"kme,omitempty"`
	Entries     uint64            `json:"entries"`
	Checkpoints int               `json:"checkpoints"`
	Signed      uint64            `json:"signed_through"`
	Head        string            `json:"head,omitempty"`
	Signers     []string          `json:"signers"`
	Events      map[string]uint64 `json:"events"`
	Error       *verifyFailure    `json:"error,omitempty"`
}

type verifyFailure struct {
	Line   int    `json:"line"`
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
}

func newAuditVerifyCmd(o *options) *cobra.Command {
	var file string
	var pubkeys []string
	c := &cobra.Command{
		Use:   "verify [--file export.jsonl] [--pubkey SITE.audit.pub ...]",
		Short: "check an export's hash chain and the site's signatures; points at the first bad entry",
		Long: `verify checks an audit export offline: every entry's hash and its link to the one before,
every checkpoint signature and the signed end line (ML-DSA-65) under the site's public key(s).
Without --file it fetches a fresh export from the site first. Without --pubkey it uses
<site>.audit.pub beside the CA certificate (where qkms keeps it), when it exists.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := o.loadPubkeys(pubkeys)
			if err != nil {
				return err
			}
			var r io.Reader
			switch file {
			case "":
				var buf bytes.Buffer
				if err := o.export(cmd, &buf); err != nil {
					return err
				}
				r = &buf
			case "-":
				r = cmd.InOrStdin()
			default:
				f, err := os.Open(file)
				if err != nil {
					return fmt.Errorf("open export: %w", err)
				}
				defer f.Close()
				r = f
			}
			rep, verr := audit.Verify(r, keys...)
			return printVerify(cmd.OutOrStdout(), o.json, rep, verr)
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "export to verify ('-': standard input; default: fetch one from the site)")
	c.Flags().StringSliceVar(&pubkeys, "pubkey", nil, "the site's ML-DSA-65 public key file(s) (<site>.audit.pub)")
	return c
}

// loadPubkeys reads the given public key files, or the default one of the configured site.
func (o *options) loadPubkeys(paths []string) ([]*mldsa65.PublicKey, error) {
	if len(paths) == 0 {
		st, err := o.resolve()
		if err != nil || st.Site == "" {
			return nil, errors.New("no public key to verify signatures with; give --pubkey SITE.audit.pub (written beside the site's certificates)")
		}
		p := filepath.Join(filepath.Dir(st.CA), st.Site+".audit.pub")
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("no public key at %s; give --pubkey SITE.audit.pub", p)
		}
		paths = []string{p}
	}
	var keys []*mldsa65.PublicKey
	for _, p := range paths {
		k, err := identity.LoadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("%v; give the site's public key file (<site>.audit.pub)", err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func printVerify(w io.Writer, asJSON bool, rep audit.Report, verr error) error {
	var ve *audit.VerifyError
	if verr != nil && !errors.As(verr, &ve) {
		return fmt.Errorf("verify: %w", verr)
	}
	if asJSON {
		res := verifyResult{OK: verr == nil, KME: rep.KME, Entries: rep.Entries, Checkpoints: rep.Checkpoints,
			Signed: rep.Signed, Head: hex.EncodeToString(rep.Head), Signers: rep.Signers, Events: map[string]uint64{}}
		for ev, n := range rep.Events {
			res.Events[string(ev)] = n
		}
		if ve != nil {
			res.Error = &verifyFailure{Line: ve.Line, Seq: ve.Seq, Kind: strings.TrimPrefix(ve.Kind.Error(), "audit: "), Reason: ve.Reason}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else if ve == nil {
		fmt.Fprintf(w, "audit export of %s verified: %d entries, %d checkpoints, signed through entry %d by %s\n",
			rep.KME, rep.Entries, rep.Checkpoints, rep.Signed, strings.Join(rep.Signers, ", "))
	}
	if ve != nil {
		return fmt.Errorf("export does NOT verify: first bad entry is %d (line %d): %s: %s; the %d entries before it are intact",
			ve.Seq, ve.Line, strings.TrimPrefix(ve.Kind.Error(), "audit: "), ve.Reason, rep.Entries)
	}
	return nil
}
