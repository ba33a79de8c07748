// Package peerpb is the generated wire contract of the peer channel between qkms sites
// (peer.proto, package qkms.peer.v1). The channel never carries key material; the package
// peer holds the server, the client and the validation of every message.
package peerpb

//go:generate sh ../../tools/protoc.sh
