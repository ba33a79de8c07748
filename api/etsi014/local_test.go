package etsi014

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
)

var (
	leafMu sync.Mutex
	leaves = map[string]*x509.Certificate{}
)

// leafOf returns the parsed certificate of a layout entity.
func leafOf(id string) *x509.Certificate {
	leafMu.Lock()
	defer leafMu.Unlock()
	if c, ok := leaves[id]; ok {
		return c
	}
	e, ok := layout.Find(id)
	if !ok {
		panic("no entity " + id)
	}
	b, err := os.ReadFile(e.Cert)
	if err != nil {
		panic(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		panic(err)
	}
	leaves[id] = c
	return c
}

// serveLocal calls h in-process as if over a TLS connection whose client certificate of
// entity id was verified: the fast path for fuzzing and benchmarks of the handler itself.
// A target a server would not accept gives Code -1.
func serveLocal(h http.Handler, id, method, target, body string) *httptest.ResponseRecorder {
	r := serveLocalRequest(id, method, target, body)
	if r == nil {
		rec := httptest.NewRecorder()
		rec.Code = -1
		return rec
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// serveLocalRequest builds the request of serveLocal, or nil for an unacceptable target.
func serveLocalRequest(id, method, target, body string) *http.Request {
	r := httptest.NewRequest(method, "https://kme.test/", strings.NewReader(body))
	if err := setTarget(r, target); err != nil {
		return nil
	}
	r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leafOf(id)}}}
	return r
}

// setTarget sets the request URI as a server would parse it from the request line.
func setTarget(r *http.Request, target string) error {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return err
	}
	r.URL = u
	r.RequestURI = target
	return nil
}
