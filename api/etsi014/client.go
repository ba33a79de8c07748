package etsi014

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxResponseBytes bounds what the client reads from a KME: a thousand keys of 64 kbit.
const maxResponseBytes = 16 << 20

// Client calls an ETSI GS QKD 014 KME as an SAE. It is safe for concurrent use; requests
// share a pool of keep-alive connections.
type Client struct {
	base string
	hc   *http.Client
}

// APIError is a non-200 answer of a KME, with its Error object (clause 6.5).
type APIError struct {
	StatusCode int
	Message    string
	Details    []map[string]any
}

func (e *APIError) Error() string {
	return fmt.Sprintf("etsi014: KME answered %d: %s", e.StatusCode, e.Message)
}

// NewClient returns a client of the KME at baseURL (e.g. "https://127.0.0.1:8443"), using
// tlsCfg for mutual TLS (pki.ClientConfig). The transport keeps many idle connections per
// host so that many concurrent SAEs each reuse a connection instead of handshaking again;
// it speaks HTTP/1.1, whose one-request-per-connection model spreads load over the server's
// cores better than one multiplexed HTTP/2 connection.
func NewClient(baseURL string, tlsCfg *tls.Config) *Client {
	var cfg *tls.Config
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	tr := &http.Transport{
		Proxy:               nil, // KMEs are reached directly; a proxy would see nothing but must not be implied
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: &http.Client{Transport: tr}}
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

func (c *Client) url(saeID, method string) string {
	return c.base + PathPrefix + url.PathEscape(saeID) + "/" + method
}

// Status calls Get status (clause 5.2) for the link to slave.
func (c *Client) Status(ctx context.Context, slave string) (*Status, error) {
	body, err := c.do(ctx, http.MethodGet, c.url(slave, "status"), nil, nil)
	if err != nil {
		return nil, err
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("etsi014: decode status from %s: %w", c.base, err)
	}
	return &st, nil
}

// GetKey calls Get key (clause 5.3) with POST and returns the keys for slave.
func (c *Client) GetKey(ctx context.Context, slave string, req KeyRequest) ([]DeliveredKey, error) {
	reqBody, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("etsi014: encode key request: %w", err)
	}
	body, err := c.do(ctx, http.MethodPost, c.url(slave, "enc_keys"), reqBody, nil)
	if err != nil {
		return nil, err
	}
	return decodeKeys(body)
}

// GetKeyWithIDs calls Get key with key IDs (clause 5.4) with POST for keys master obtained.
func (c *Client) GetKeyWithIDs(ctx context.Context, master string, ids []string) ([]DeliveredKey, error) {
	return c.GetKeyWithIDsIdempotent(ctx, master, ids, "")
}

// GetKeyWithIDsIdempotent is GetKeyWithIDs with an Idempotency-Key (IdempotencyKeyHeader):
// after an error that leaves the outcome unknown, calling it again with the same ids and
// requestID returns the keys even if the first call took them. requestID "" sends none.
func (c *Client) GetKeyWithIDsIdempotent(ctx context.Context, master string, ids []string, requestID string) ([]DeliveredKey, error) {
	in := KeyIDs{KeyIDs: make([]KeyIDEntry, len(ids))}
	for i, id := range ids {
		in.KeyIDs[i].KeyID = id
	}
	reqBody, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("etsi014: encode key IDs: %w", err)
	}
	var hdr http.Header
	if requestID != "" {
		hdr = http.Header{IdempotencyKeyHeader: {requestID}}
	}
	body, err := c.do(ctx, http.MethodPost, c.url(master, "dec_keys"), reqBody, hdr)
	if err != nil {
		return nil, err
	}
	return decodeKeys(body)
}

// decodeKeys turns a Key container into DeliveredKeys and wipes the response body, which
// holds the keys in base64. The layout KMEs write is read by scanKeyContainer; anything else
// by encoding/json.
func decodeKeys(body []byte) ([]DeliveredKey, error) {
	defer clear(body)
	if keys, ok := scanKeyContainer(body); ok {
		return keys, nil
	}
	return decodeKeysJSON(body)
}

// describeJSONError says what is wrong with a body encoding/json refused without quoting it:
// encoding/json's own messages quote a character or a number of the body, which in a Key
// container may be key material.
func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("member %q is not of type %s", typ.Field, typ.Type)
	}
	return "not a Key container"
}

// decodeKeysJSON is decodeKeys with encoding/json, for any Key container.
func decodeKeysJSON(body []byte) ([]DeliveredKey, error) {
	var kc KeyContainer
	if err := json.Unmarshal(body, &kc); err != nil {
		for _, k := range kc.Keys { // keys decoded before the error
			clear(k.Key)
		}
		return nil, fmt.Errorf("etsi014: decode key container: %s", describeJSONError(err))
	}
	keys := make([]DeliveredKey, len(kc.Keys))
	for i, k := range kc.Keys {
		keys[i] = DeliveredKey{ID: k.KeyID, Bytes: k.Key, Extension: k.KeyExtension}
	}
	return keys, nil
}

// readAnswer reads a body of at most maxResponseBytes+1 bytes. A body of announced length is
// read into one buffer made for it, instead of one grown step by step, which would leave copies
// of the key material it carries behind.
func readAnswer(resp *http.Response) ([]byte, error) {
	var size int64
	if n := resp.ContentLength; n > 0 && n <= maxResponseBytes {
		size = n
	}
	// ReadFrom keeps bytes.MinRead free before each read: with that much more, it never grows
	// the buffer for a body no longer than announced.
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	_, err := buf.ReadFrom(io.LimitReader(resp.Body, maxResponseBytes+1))
	return buf.Bytes(), err
}

func (c *Client) do(ctx context.Context, method, u string, reqBody []byte, hdr http.Header) ([]byte, error) {
	var rd io.Reader
	if reqBody != nil {
		rd = bytes.NewReader(reqBody)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("etsi014: %s %s: %w", method, u, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("etsi014: %s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	body, err := readAnswer(resp)
	if err != nil {
		clear(body)
		return nil, fmt.Errorf("etsi014: %s %s: read answer: %w", method, u, err)
	}
	if len(body) > maxResponseBytes {
		clear(body)
		return nil, fmt.Errorf("etsi014: %s %s: answer larger than %d bytes", method, u, maxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		apiErr := &APIError{StatusCode: resp.StatusCode}
		var e Error
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			apiErr.Message, apiErr.Details = e.Message, e.Details
		} else {
			apiErr.Message = http.StatusText(resp.StatusCode)
		}
		return nil, apiErr
	}
	return body, nil
}
