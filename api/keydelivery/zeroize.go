package keydelivery

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/qkms/qkms/api/keyspb"
)

// ServerCodec is the codec a server of KeyDelivery should use (grpc.ForceServerCodecV2): the
// standard protobuf codec, which in addition wipes the key bytes of a KeyContainer as soon as
// they are encoded. A unary handler returns its answer to gRPC, which encodes it after the
// handler has returned, so the handler itself cannot clear the keys it delivered (StreamKeys
// and FollowKeys clear theirs after each Send). The delivered bytes are the service's own
// buffers (kms.Key.Bytes), so this wipes the KME's plaintext copy of the keys.
//
// Best effort, like all zeroization in Go (see package pq): the encoded message sits in a
// buffer of gRPC's pool, which gRPC reuses without clearing, and in the TLS record buffers.
func ServerCodec() encoding.CodecV2 {
	return wipingCodec{encoding.GetCodecV2(proto.Name)}
}

type wipingCodec struct{ encoding.CodecV2 }

func (c wipingCodec) Marshal(v any) (mem.BufferSlice, error) {
	out, err := c.CodecV2.Marshal(v)
	if kc, ok := v.(*keyspb.KeyContainer); ok {
		for _, k := range kc.GetKeys() {
			clear(k.GetKey())
		}
	}
	return out, err
}
