package raft

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

// The first byte a dialer writes after the TLS handshake says which protocol the connection
// carries, so raft and forwarding share one listener (and one set of certificates).
const (
	protoRaft    byte = 'R'
	protoForward byte = 'F'
)

// errListenerClosed is returned by Accept after Close.
var errListenerClosed = errors.New("raft: listener closed")

// streamLayer is an hraft.StreamLayer over mutual TLS: both ends present a certificate and
// verify the other's against the site's CA, so a node of another site or CA can neither
// dial in nor be dialled.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	timeout   time.Duration // handshake and first-byte deadline
	log       *slog.Logger
	forward   func(net.Conn)

	raftConns chan net.Conn
	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// siteTLS derives the server and client sides of the internal listener from one config that
// holds the node's certificate and the site's CA. Chain verification alone is not enough: one
// CA commonly issues the certificates of SAEs, administrators and the KMEs of several sites
// (pki's development CA does), and none of those may speak raft or forward commands here.
// So each side also checks the peer's leaf with verifyPeer, by default: the peer's subject
// names the same entity as our own certificate (same CommonName and OrganizationalUnit, i.e.
// the same KME_ID with the kme role).
func siteTLS(c *tls.Config, verifyPeer func(*x509.Certificate) error) (server, client *tls.Config, err error) {
	if c == nil || len(c.Certificates) == 0 {
		return nil, nil, errors.New("raft: TLS config with the node's certificate (Certificates) is required")
	}
	if verifyPeer == nil {
		own := c.Certificates[0].Leaf
		if own == nil {
			if own, err = x509.ParseCertificate(c.Certificates[0].Certificate[0]); err != nil {
				return nil, nil, fmt.Errorf("raft: parse the node's certificate: %w", err)
			}
		}
		verifyPeer = sameEntity(own)
	}
	server = c.Clone()
	if server.ClientCAs == nil {
		server.ClientCAs = c.RootCAs
	}
	if server.ClientCAs == nil {
		return nil, nil, errors.New("raft: TLS config must name the site's CA (RootCAs or ClientCAs)")
	}
	server.ClientAuth = tls.RequireAndVerifyClientCert
	client = c.Clone()
	if client.RootCAs == nil {
		client.RootCAs = c.ClientCAs
	}
	for _, tc := range []*tls.Config{server, client} {
		if tc.MinVersion < tls.VersionTLS13 {
			tc.MinVersion = tls.VersionTLS13 // only our own nodes speak here
		}
		prev := tc.VerifyConnection
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if prev != nil {
				if err := prev(cs); err != nil {
					return err
				}
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("raft: peer presented no certificate")
			}
			if err := verifyPeer(cs.PeerCertificates[0]); err != nil {
				return fmt.Errorf("raft: peer is not a node of this site: %w", err)
			}
			return nil
		}
	}
	return server, client, nil
}

// sameEntity accepts certificates whose subject names the same entity as own.
func sameEntity(own *x509.Certificate) func(*x509.Certificate) error {
	return func(peer *x509.Certificate) error {
		if peer.Subject.CommonName != own.Subject.CommonName ||
			!slices.Equal(peer.Subject.OrganizationalUnit, own.Subject.OrganizationalUnit) {
			return fmt.Errorf("certificate of %q (%v), this site is %q (%v)", peer.Subject.CommonName,
				peer.Subject.OrganizationalUnit, own.Subject.CommonName, own.Subject.OrganizationalUnit)
		}
		return nil
	}
}

func newStreamLayer(ln net.Listener, advertise string, tc *tls.Config, verifyPeer func(*x509.Certificate) error, timeout time.Duration, log *slog.Logger) (*streamLayer, error) {
	server, client, err := siteTLS(tc, verifyPeer)
	if err != nil {
		return nil, err
	}
	if advertise == "" {
		advertise = ln.Addr().String()
	}
	// The address is kept as given, host name included: raft records it in the cluster
	// configuration, other nodes dial it and check the certificate against its host name, and a
	// name survives an address change (a container restarted elsewhere) where a resolved IP
	// would not.
	host, port, err := net.SplitHostPort(advertise)
	if err != nil || host == "" || port == "" || port == "0" {
		return nil, fmt.Errorf("raft: advertise address %q: want host:port with a fixed port", advertise)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return nil, fmt.Errorf("raft: advertise address %q is not routable; set Advertise", advertise)
	}
	adv := advertiseAddr(advertise)
	return &streamLayer{
		ln: ln, advertise: adv, server: server, client: client, timeout: timeout, log: log,
		raftConns: make(chan net.Conn), closed: make(chan struct{}),
	}, nil
}

// advertiseAddr is the address other nodes dial, exactly as configured.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// serve accepts connections until Close, handing each to raft or to the forwarding server.
func (s *streamLayer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error("raft: accept on internal listener failed; listener stopped", "err", err)
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.route(c)
		}()
	}
}

func (s *streamLayer) route(c net.Conn) {
	tc := tls.Server(c, s.server)
	_ = tc.SetDeadline(time.Now().Add(s.timeout))
	var b [1]byte
	if err := tc.Handshake(); err != nil {
		// A node of another site or CA lands here.
		s.log.Warn("raft: refused internal connection", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	if _, err := io.ReadFull(tc, b[:]); err != nil {
		_ = tc.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	switch b[0] {
	case protoRaft:
		select {
		case s.raftConns <- tc:
		case <-s.closed:
			_ = tc.Close()
		}
	case protoForward:
		if s.forward == nil {
			_ = tc.Close()
			return
		}
		s.forward(tc)
	default:
		s.log.Warn("raft: unknown protocol byte on internal listener", "remote", c.RemoteAddr().String())
		_ = tc.Close()
	}
}

// Accept implements net.Listener for raft's NetworkTransport.
func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.raftConns:
		return c, nil
	case <-s.closed:
		return nil, errListenerClosed
	}
}

// Close stops the listener; connections already handed out are closed by their owners.
func (s *streamLayer) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.ln.Close()
	})
	return err
}

// wait returns when the accept loop and routing goroutines have ended (after Close and after
// the forwarding connections have been closed).
func (s *streamLayer) wait() { s.wg.Wait() }

func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial implements hraft.StreamLayer.
func (s *streamLayer) Dial(addr hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return s.dial(context.Background(), string(addr), protoRaft, timeout)
}

func (s *streamLayer) dial(ctx context.Context, addr string, proto byte, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = s.timeout
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("raft: dial %s: %w", addr, err)
	}
	if _, err := c.Write([]byte{proto}); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("raft: dial %s: %w", addr, err)
	}
	return c, nil
}

// hclogger adapts raft's hclog output to the node's slog logger, at the level slog enables.
func hclogger(l *slog.Logger, name string) hclog.Logger {
	lvl := hclog.Warn
	switch {
	case l.Enabled(context.Background(), slog.LevelDebug):
		lvl = hclog.Debug
	case l.Enabled(context.Background(), slog.LevelInfo):
		lvl = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: lvl, Output: &slogWriter{l: l}, DisableTime: true})
}

// slogWriter turns hclog's formatted lines into slog records.
type slogWriter struct {
	l  *slog.Logger
	mu sync.Mutex
}

func (w *slogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		line := sc.Text()
		lvl := slog.LevelInfo
		switch {
		case strings.Contains(line, "[ERROR]"):
			lvl = slog.LevelError
		case strings.Contains(line, "[WARN]"):
			lvl = slog.LevelWarn
		case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
			lvl = slog.LevelDebug
		}
		w.l.Log(context.Background(), lvl, line)
	}
	return len(p), nil
}
