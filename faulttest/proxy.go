package faulttest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Proxy relays TCP connections from its listener to a target. Nodes advertise the proxy's
// address, so every byte between them passes through a Proxy the test controls.
//
// A blackholed connection is not closed: both sockets stay open and whatever either side sends
// is read and discarded, as when a network drops packets. The nodes notice only through their
// own timeouts, as in a real partition. Heal closes the held connections so they are redialled.
type Proxy struct {
	ln     net.Listener
	target string
	// Source names the process that opened an accepted connection (-1: unknown). Loopback
	// connections all come from 127.0.0.1 whatever address the dialer's own listener is bound
	// to (Go's dialer does not bind the source), so the source is found by socket ownership
	// (SocketOwner) rather than by address.
	Source func(c net.Conn) int

	mu        sync.Mutex
	blackhole bool         // every connection, new and existing, is dropped
	blocked   map[int]bool // connections from these sources are dropped
	conns     map[*relay]struct{}
	closed    bool
	wg        sync.WaitGroup
}

type relay struct {
	down, up net.Conn // up is nil for a connection held from the start
	src      int
	dropped  atomic.Bool
}

// NewProxy listens on listenAddr (e.g. "127.0.0.1:0") and relays to target.
func NewProxy(listenAddr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("faulttest: proxy for %s: %w", target, err)
	}
	p := &Proxy{ln: ln, target: target, blocked: map[int]bool{}, conns: map[*relay]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address to advertise instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		src := -1
		if p.Source != nil {
			src = p.Source(c)
		}
		r := &relay{down: c, src: src}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[r] = struct{}{}
		drop := p.blackhole || p.blocked[src]
		p.mu.Unlock()
		if drop {
			r.dropped.Store(true)
			p.wg.Add(1)
			go p.pipe(r, c, nil)
			continue
		}
		p.wg.Add(1)
		go p.connect(r)
	}
}

func (p *Proxy) connect(r *relay) {
	defer p.wg.Done()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		p.forget(r)
		return
	}
	p.mu.Lock()
	r.up = up
	p.mu.Unlock()
	p.wg.Add(2)
	go p.pipe(r, r.down, up)
	go p.pipe(r, up, r.down)
}

// pipe copies from src to dst until either fails; once the relay is dropped it reads and
// discards. dst nil: discard only.
func (p *Proxy) pipe(r *relay, src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && dst != nil && !r.dropped.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil && !r.dropped.Load() {
				err = werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && r.dropped.Load() {
				// The sender gave up on a blackholed connection; keep the other end hanging.
				return
			}
			if !r.dropped.Load() {
				p.forget(r)
			}
			return
		}
	}
}

func (p *Proxy) forget(r *relay) {
	p.mu.Lock()
	delete(p.conns, r)
	p.mu.Unlock()
	r.down.Close()
	if r.up != nil {
		r.up.Close()
	}
}

// Blackhole drops all traffic through the proxy, on existing and new connections.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = true
	for r := range p.conns {
		r.dropped.Store(true)
	}
}

// Block drops the traffic of connections opened by source src, existing and new.
func (p *Proxy) Block(src int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked[src] = true
	for r := range p.conns {
		if r.src == src {
			r.dropped.Store(true)
		}
	}
}

// Heal ends every blackhole and block and closes the dropped connections, so their owners
// notice at once and dial again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.blackhole = false
	clear(p.blocked)
	var dead []*relay
	for r := range p.conns {
		if r.dropped.Load() {
			dead = append(dead, r)
			delete(p.conns, r)
		}
	}
	p.mu.Unlock()
	for _, r := range dead {
		r.down.Close()
		if r.up != nil {
			r.up.Close()
		}
	}
}

// Close stops the listener and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	err := p.ln.Close()
	for r := range p.conns {
		r.dropped.Store(true)
		r.down.Close()
		if r.up != nil {
			r.up.Close()
		}
	}
	clear(p.conns)
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// SocketOwner returns which of pids holds the client end of the loopback TCP connection c
// accepted (its remote address is the client's local address), or -1. It reads Linux's
// /proc/net/tcp for the socket's inode and the processes' fd tables for the inode.
func SocketOwner(c net.Conn, pids []int) int {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return -1
	}
	inode, err := socketInode(remote.Port, local.Port)
	if err != nil {
		return -1
	}
	want := "socket:[" + inode + "]"
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
				return pid
			}
		}
	}
	return -1
}

// socketInode finds the inode of the IPv4 socket whose local port is lport and remote port
// rport (/proc/net/tcp: "sl local_address rem_address st ... uid timeout inode").
func socketInode(lport, rport int) (string, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 {
			continue
		}
		if port(fs[1]) == lport && port(fs[2]) == rport {
			return fs[9], nil
		}
	}
	return "", errors.New("faulttest: socket not found in /proc/net/tcp")
}

func port(hexAddr string) int {
	i := strings.LastIndexByte(hexAddr, ':')
	if i < 0 {
		return -1
	}
	v, err := strconv.ParseUint(hexAddr[i+1:], 16, 16)
	if err != nil {
		return -1
	}
	return int(v)
}
