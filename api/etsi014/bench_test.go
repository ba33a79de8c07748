package etsi014

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"testing"
)

// oneKeyService hands out one fresh 256-bit key per call and accepts any key ID, so the
// benchmarks measure the handler (routing, identity, JSON decode, encode, wiping) alone.
type oneKeyService struct{}

func (oneKeyService) Status(ctx context.Context, master, slave string) (*Status, error) {
	return &Status{}, nil
}

func (oneKeyService) GetKey(ctx context.Context, master, slave string, req KeyRequest) ([]DeliveredKey, error) {
	b := make([]byte, 32)
	rand.Read(b)
	return []DeliveredKey{{ID: "6c5d2b4a-1f3e-4c6a-9b2d-8e7f6a5b4c3d", Bytes: b}}, nil
}

func (oneKeyService) GetKeyWithIDs(ctx context.Context, slave, master string, ids []string, _ string) ([]DeliveredKey, error) {
	b := make([]byte, 32)
	rand.Read(b)
	return []DeliveredKey{{ID: ids[0], Bytes: b}}, nil
}

// discardWriter is a ResponseWriter that keeps only the status code.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// benchHandler serves one prepared request repeatedly, so the benchmark measures the
// handler alone: routing, identity, JSON decode, the Service call, encoding and wiping.
func benchHandler(b *testing.B, as, target, body string) {
	h := NewHandler(oneKeyService{}, Options{Logger: quietLog})
	r := serveLocalRequest(as, http.MethodPost, target, body)
	w := &discardWriter{h: http.Header{}}
	rd := bytes.NewReader([]byte(body))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset([]byte(body))
		r.Body = io.NopCloser(rd)
		w.code = 0
		h.ServeHTTP(w, r)
		if w.code != 200 {
			b.Fatal(w.code)
		}
	}
}

// BenchmarkHandlerGetKey is one POST enc_keys of one 256-bit key through the handler.
func BenchmarkHandlerGetKey(b *testing.B) {
	benchHandler(b, "SAE-A1", keysPath+"SAE-B1/enc_keys", `{"number":1,"size":256}`)
}

// BenchmarkHandlerGetKeyWithIDs is one POST dec_keys of one key ID through the handler.
func BenchmarkHandlerGetKeyWithIDs(b *testing.B) {
	benchHandler(b, "SAE-B1", keysPath+"SAE-A1/dec_keys", `{"key_IDs":[{"key_ID":"6c5d2b4a-1f3e-4c6a-9b2d-8e7f6a5b4c3d"}]}`)
}

// BenchmarkClientGetKeyTLS is the full path over keep-alive mutual TLS on loopback:
// client encode, HTTP/1.1, handler, client decode. Run with -cpu to vary parallelism.
func BenchmarkClientGetKeyTLS(b *testing.B) {
	srv := startKME(b, oneKeyService{})
	c := NewClient(srv.URL, tlsFor(b, "SAE-A1"))
	defer c.CloseIdleConnections()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			keys, err := c.GetKey(context.Background(), "SAE-B1", KeyRequest{Number: 1, Size: 256})
			if err != nil || len(keys) != 1 {
				b.Fatal(err)
			}
		}
	})
}
