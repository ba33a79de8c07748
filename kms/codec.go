package kms

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// A log entry is a batch of Commands. Its first byte is the format version:
//
// batchV3 (written): uvarint count, then per command a kind byte and a uvarint-length-prefixed
// body. The commands of every key request (Issue, Fetch, PeerReserve, MarkPushed) have binary
// bodies (wire.go): JSON cost about a fifth of a site's CPU per key, reservations with their
// timestamps above all. Every other command is kindJSON: its JSON, then for an Ingest the
// sealed material as a raw blob (key blocks are megabytes; base64 inside JSON would cost a
// third more space and most of the decoding time).
//
//	Issue:       time Time | str ReqID | str Self, Peer, Master | list Slaves | int Bits |
//	             list KeyIDs | time Expires | str Provenance
//	Fetch:       time Time | str ReqID | str Master, Caller | list KeyIDs
//	PeerReserve: time Time | str ReqID | str From | uvarint count, Reservation bodies
//	MarkPushed:  time Time | str ReqID | list KeyIDs
//
// batchV2 (still read, from logs written before): a uvarint-prefixed JSON array of Commands,
// then the IngestCmd.Sealed blobs in command order.
const (
	batchV2 byte = 2
	batchV3 byte = 3
)

// ErrNewerFormat marks a log entry this version cannot read but a later version may have
// written: a higher batch version, an unknown command kind, or a JSON command with a field
// this version does not know. A node must not skip such an entry (its state would part from
// that of the nodes that applied it); it stops until it is upgraded (README, "Upgrading a site").
var ErrNewerFormat = errors.New("written by a newer qkms version")

// Command kinds of batchV3.
const (
	kindJSON byte = iota
	kindIssue
	kindFetch
	kindPeerReserve
	kindMarkPushed
)

// maxBatchCommands bounds a decoded batch; a log entry is a batch of proposals.
const maxBatchCommands = 1 << 16

// EncodeBatch encodes commands for one entry of the replicated log (batchV3).
func EncodeBatch(cmds []*Command) ([]byte, error) {
	size := 1 + binary.MaxVarintLen64
	for i, c := range cmds {
		if c == nil {
			return nil, fmt.Errorf("kms: encode batch: command %d is nil", i)
		}
		size += 64 + len(c.ReqID)
		switch {
		case c.Issue != nil:
			size += 40 * len(c.Issue.KeyIDs)
		case c.Fetch != nil:
			size += 40 * len(c.Fetch.KeyIDs)
		case c.MarkPushed != nil:
			size += 40 * len(c.MarkPushed.KeyIDs)
		case c.PeerReserve != nil:
			for j := range c.PeerReserve.Reservations {
				size += ReservationSize(&c.PeerReserve.Reservations[j])
			}
		case c.Ingest != nil:
			size += len(c.Ingest.Sealed) + 512
		}
	}
	out := make([]byte, 0, size)
	out = append(out, batchV3)
	out = binary.AppendUvarint(out, uint64(len(cmds)))
	var body []byte
	for i, c := range cmds {
		kind, b, err := encodeCommand(body[:0], c)
		if err != nil {
			return nil, fmt.Errorf("kms: encode batch: command %d: %w", i, err)
		}
		body = b
		out = append(out, kind)
		out = appendBlob(out, body)
	}
	return out, nil
}

func encodeCommand(b []byte, c *Command) (byte, []byte, error) {
	if c.kind() == "" {
		return 0, nil, fmt.Errorf("holds no single operation")
	}
	head := func(b []byte) []byte { return appendStr(appendTime(b, c.Time), c.ReqID) }
	switch {
	case c.Issue != nil:
		x := c.Issue
		b = head(b)
		b = appendStr(appendStr(appendStr(b, x.Self), x.Peer), x.Master)
		b = appendList(b, x.Slaves)
		b = binary.AppendVarint(b, int64(x.Bits))
		b = appendList(b, x.KeyIDs)
		b = appendTime(b, x.Expires)
		return kindIssue, appendStr(b, string(x.Provenance)), nil
	case c.Fetch != nil:
		x := c.Fetch
		b = appendStr(appendStr(head(b), x.Master), x.Caller)
		return kindFetch, appendList(b, x.KeyIDs), nil
	case c.PeerReserve != nil:
		x := c.PeerReserve
		b = appendStr(head(b), x.From)
		b = binary.AppendUvarint(b, uint64(len(x.Reservations)))
		for i := range x.Reservations {
			b = AppendReservation(b, &x.Reservations[i])
		}
		return kindPeerReserve, b, nil
	case c.MarkPushed != nil:
		return kindMarkPushed, appendList(head(b), c.MarkPushed.KeyIDs), nil
	}
	shallow := *c
	var sealed []byte
	if c.Ingest != nil {
		in := *c.Ingest
		sealed, in.Sealed = in.Sealed, nil
		shallow.Ingest = &in
	}
	js, err := json.Marshal(&shallow)
	if err != nil {
		return 0, nil, err
	}
	b = appendBlob(b, js)
	if c.Ingest != nil {
		b = appendBlob(b, sealed)
	}
	return kindJSON, b, nil
}

// DecodeBatch decodes a log entry written by EncodeBatch (or by the batchV2 encoder of earlier
// versions). It refuses unknown versions and kinds, trailing data, unknown fields, null
// commands and commands that do not hold exactly one operation.
func DecodeBatch(data []byte) ([]*Command, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("kms: decode batch: empty entry")
	}
	switch data[0] {
	case batchV3:
		return decodeV3(data[1:])
	case batchV2:
		return decodeV2(data[1:])
	}
	if data[0] > batchV3 {
		return nil, fmt.Errorf("kms: decode batch: version %d: %w", data[0], ErrNewerFormat)
	}
	return nil, fmt.Errorf("kms: decode batch: unknown version %d", data[0])
}

func decodeV3(data []byte) ([]*Command, error) {
	r := wireReader{b: data}
	n := r.count()
	if r.err != nil {
		return nil, fmt.Errorf("kms: decode batch: command count: %w", r.err)
	}
	if n > maxBatchCommands {
		return nil, fmt.Errorf("kms: decode batch: %d commands exceed %d", n, maxBatchCommands)
	}
	cmds := make([]*Command, n)
	for i := range cmds {
		kind := r.byte()
		body := r.blob()
		if r.err != nil {
			return nil, fmt.Errorf("kms: decode batch: command %d: %w", i, r.err)
		}
		c, err := decodeCommand(kind, body)
		if err != nil {
			return nil, fmt.Errorf("kms: decode batch: command %d: %w", i, err)
		}
		cmds[i] = c
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("kms: decode batch: %d bytes of trailing data", len(r.b))
	}
	return cmds, nil
}

func decodeCommand(kind byte, body []byte) (*Command, error) {
	r := wireReader{b: body}
	c := new(Command)
	if kind == kindJSON {
		js := r.blob()
		var sealed []byte
		if r.err == nil && len(r.b) > 0 {
			sealed = r.blob()
		}
		if err := r.end(); err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c); err != nil {
			// encoding/json has no error type for this case; its message is stable.
			if strings.HasPrefix(err.Error(), "json: unknown field") {
				return nil, fmt.Errorf("%v: %w", err, ErrNewerFormat)
			}
			return nil, err
		}
		if dec.More() {
			return nil, fmt.Errorf("trailing data after the command")
		}
		switch k := c.kind(); {
		case k == "":
			return nil, fmt.Errorf("holds no single operation")
		case k == "issue" || k == "fetch" || k == "peer_reserve" || k == "mark_pushed":
			return nil, fmt.Errorf("%s in JSON: it has a binary form", k)
		case c.Ingest == nil && sealed != nil:
			return nil, fmt.Errorf("material after a command that is not an ingest")
		case c.Ingest != nil && (c.Ingest.Sealed != nil || sealed == nil):
			return nil, fmt.Errorf("ingest without its material blob")
		case c.Ingest != nil:
			c.Ingest.Sealed = sealed
		}
		return c, nil
	}
	c.Time = r.time()
	c.ReqID = r.str()
	switch kind {
	case kindIssue:
		x := &IssueCmd{Self: r.str(), Peer: r.str(), Master: r.str(), Slaves: r.strs(), Bits: r.int()}
		x.KeyIDs = r.strs()
		x.Expires = r.time()
		x.Provenance = Provenance(r.str())
		c.Issue = x
	case kindFetch:
		c.Fetch = &FetchCmd{Master: r.str(), Caller: r.str(), KeyIDs: r.strs()}
	case kindPeerReserve:
		x := &PeerReserveCmd{From: r.str()}
		if n := r.count(); n > 0 {
			x.Reservations = make([]Reservation, n)
			for i := range x.Reservations {
				r.reservation(&x.Reservations[i])
			}
		}
		c.PeerReserve = x
	case kindMarkPushed:
		c.MarkPushed = &MarkPushedCmd{KeyIDs: r.strs()}
	default:
		return nil, fmt.Errorf("command kind %d: %w", kind, ErrNewerFormat)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeV2 decodes the batchV2 format.
func decodeV2(rest []byte) ([]*Command, error) {
	js, rest, err := takeBlob(rest)
	if err != nil {
		return nil, fmt.Errorf("kms: decode batch: commands: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var cmds []*Command
	if err := dec.Decode(&cmds); err != nil {
		return nil, fmt.Errorf("kms: decode batch: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("kms: decode batch: trailing data")
	}
	if cmds == nil {
		return nil, fmt.Errorf("kms: decode batch: not a list of commands")
	}
	if len(cmds) > maxBatchCommands {
		return nil, fmt.Errorf("kms: decode batch: %d commands exceed %d", len(cmds), maxBatchCommands)
	}
	for i, c := range cmds {
		if c == nil || c.kind() == "" {
			return nil, fmt.Errorf("kms: decode batch: command %d holds no single operation", i)
		}
		if c.Ingest == nil {
			continue
		}
		if c.Ingest.Sealed != nil {
			return nil, fmt.Errorf("kms: decode batch: command %d carries sealed material inline", i)
		}
		var blob []byte
		if blob, rest, err = takeBlob(rest); err != nil {
			return nil, fmt.Errorf("kms: decode batch: material of command %d: %w", i, err)
		}
		c.Ingest.Sealed = blob
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("kms: decode batch: %d bytes of trailing data", len(rest))
	}
	return cmds, nil
}

// takeBlob splits a uvarint-length-prefixed blob off the front of p.
func takeBlob(p []byte) (blob, rest []byte, err error) {
	n, k := binary.Uvarint(p)
	if k <= 0 {
		return nil, nil, fmt.Errorf("bad length prefix")
	}
	if n > uint64(len(p)-k) {
		return nil, nil, fmt.Errorf("length %d exceeds the %d bytes left", n, len(p)-k)
	}
	return p[k : k+int(n)], p[k+int(n):], nil
}
