package keydelivery

import (
	"context"
	"crypto/tls"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/qkms/qkms/api/keyspb"
)

// Client calls a site's KeyDelivery service as an SAE over mutual TLS. It is safe for
// concurrent use: calls are multiplexed over one HTTP/2 connection. Errors carry the gRPC
// status of the answer (status.Code works on them).
type Client struct {
	conn *grpc.ClientConn
	kd   keyspb.KeyDeliveryClient
}

// Dial returns a client of the KeyDelivery service at addr ("host:port"), authenticating
// with tlsCfg (pki.ClientConfig with the SAE's certificate). It connects lazily.
func Dial(addr string, tlsCfg *tls.Config) (*Client, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg.Clone())),
		// Fixed windows turn off BDP estimation pings, which small key messages do not need.
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20))
	if err != nil {
		return nil, fmt.Errorf("keydelivery: dial %s: %w", addr, err)
	}
	return &Client{conn: conn, kd: keyspb.NewKeyDeliveryClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// API is the generated client, for the streams and for fields the helpers do not expose.
func (c *Client) API() keyspb.KeyDeliveryClient { return c.kd }

// Status is Get status for the link to slave.
func (c *Client) Status(ctx context.Context, slave string) (*keyspb.Status, error) {
	st, err := c.kd.GetStatus(ctx, &keyspb.GetStatusRequest{SlaveSaeId: slave})
	if err != nil {
		return nil, fmt.Errorf("keydelivery: get status: %w", err)
	}
	return st, nil
}

// GetKey is Get key: number keys of size bits (0: the defaults) for slave and additional.
func (c *Client) GetKey(ctx context.Context, slave string, number, size int, additional ...string) ([]Key, error) {
	kc, err := c.kd.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: slave, Number: int32(number), Size: int32(size), AdditionalSlaveSaeIds: additional})
	if err != nil {
		return nil, fmt.Errorf("keydelivery: get key: %w", err)
	}
	return fromProto(kc.GetKeys()), nil
}

// GetKeyWithIDs is Get key with key IDs: the keys keyIDs that master obtained for the caller.
func (c *Client) GetKeyWithIDs(ctx context.Context, master string, keyIDs []string) ([]Key, error) {
	return c.GetKeyWithIDsIdempotent(ctx, master, keyIDs, "")
}

// GetKeyWithIDsIdempotent is GetKeyWithIDs with an idempotency key (IdempotencyKeyMetadata):
// after an error that leaves the outcome unknown, calling it again with the same keyIDs and
// requestID returns the keys even if the first call took them. requestID "" sends none.
func (c *Client) GetKeyWithIDsIdempotent(ctx context.Context, master string, keyIDs []string, requestID string) ([]Key, error) {
	if requestID != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, IdempotencyKeyMetadata, requestID)
	}
	kc, err := c.kd.GetKeyWithIDs(ctx, &keyspb.GetKeyWithIDsRequest{MasterSaeId: master, KeyIds: keyIDs})
	if err != nil {
		return nil, fmt.Errorf("keydelivery: get key with key IDs: %w", err)
	}
	return fromProto(kc.GetKeys()), nil
}

func fromProto(pks []*keyspb.Key) []Key {
	out := make([]Key, len(pks))
	for i, pk := range pks {
		out[i] = Key{ID: pk.GetKeyId(), Bytes: pk.GetKey(), Provenance: pk.GetProvenance()}
		if pk.GetExpires() != nil {
			out[i].Expires = pk.GetExpires().AsTime()
		}
	}
	return out
}
