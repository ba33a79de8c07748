package kms

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// batchV1 is the first byte of a batch encoded as a JSON array of Commands. The version byte
// lets the log's encoding change (say to a binary form) while old entries stay readable.
const batchV1 byte = 1

// maxBatchCommands bounds a decoded batch; a log entry is a batch of proposals.
const maxBatchCommands = 1 << 16

// EncodeBatch encodes commands for one entry of the replicated log.
func EncodeBatch(cmds []*Command) ([]byte, error) {
	for i, c := range cmds {
		if c == nil {
			return nil, fmt.Errorf("kms: encode batch: command %d is nil", i)
		}
	}
	var buf bytes.Buffer
	buf.WriteByte(batchV1)
	if err := json.NewEncoder(&buf).Encode(cmds); err != nil {
		return nil, fmt.Errorf("kms: encode batch: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeBatch decodes a log entry written by EncodeBatch. It refuses unknown versions, trailing
// data, unknown fields, null commands and commands that do not hold exactly one operation.
func DecodeBatch(data []byte) ([]*Command, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("kms: decode batch: empty entry")
	}
	if data[0] != batchV1 {
		return nil, fmt.Errorf("kms: decode batch: unknown version %d", data[0])
	}
	dec := json.NewDecoder(bytes.NewReader(data[1:]))
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
	}
	return cmds, nil
}
