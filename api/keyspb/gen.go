// Package keyspb is the generated wire contract of the gRPC API of a qkms site
// (keys.proto, package qkms.v1): KeyDelivery for encryptors, mirroring ETSI GS QKD 014 plus a
// stream of keys for continuous rekeying, and Admin for operators.
package keyspb

//go:generate sh ../../tools/protoc.sh
