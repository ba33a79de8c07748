package kms

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// batchV2 is the first byte of a batch: a uvarint-prefixed JSON array of Commands whose
// IngestCmd.Sealed is carried after it, as raw uvarint-prefixed blobs in command order. Key
// blocks are megabytes; base64 inside JSON would cost a third more space and most of the
// decoding time of the log.
const batchV2 byte = 2

// maxBatchCommands bounds a decoded batch; a log entry is a batch of proposals.
const maxBatchCommands = 1 << 16

// EncodeBatch encodes commands for one entry of the replicated log.
func EncodeBatch(cmds []*Command) ([]byte, error) {
	shallow := make([]Command, len(cmds))
	var blobs [][]byte
	size := 0
	for i, c := range cmds {
		if c == nil {
			return nil, fmt.Errorf("kms: encode batch: command %d is nil", i)
		}
		shallow[i] = *c
		if c.Ingest != nil {
			in := *c.Ingest
			blobs = append(blobs, in.Sealed)
			size += len(in.Sealed) + binary.MaxVarintLen64
			in.Sealed = nil
			shallow[i].Ingest = &in
		}
	}
	js, err := json.Marshal(shallow)
	if err != nil {
		return nil, fmt.Errorf("kms: encode batch: %w", err)
	}
	out := make([]byte, 0, 1+binary.MaxVarintLen64+len(js)+size)
	out = append(out, batchV2)
	out = binary.AppendUvarint(out, uint64(len(js)))
	out = append(out, js...)
	for _, b := range blobs {
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out, nil
}

// DecodeBatch decodes a log entry written by EncodeBatch. It refuses unknown versions, trailing
// data, unknown fields, null commands and commands that do not hold exactly one operation.
func DecodeBatch(data []byte) ([]*Command, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("kms: decode batch: empty entry")
	}
	if data[0] != batchV2 {
		return nil, fmt.Errorf("kms: decode batch: unknown version %d", data[0])
	}
	rest := data[1:]
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
