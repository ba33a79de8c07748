package faulttest

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// Process is one node: the qkms binary run as `qkms serve --config FILE`, its output appended
// to a log file. It can be killed (SIGKILL), paused (SIGSTOP/SIGCONT) and started again with
// the same configuration.
type Process struct {
	Bin, Config, Log string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	paused bool
}

// Start runs the process; it is an error if it runs already.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("faulttest: %s runs already", p.Config)
	}
	out, err := os.OpenFile(p.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("faulttest: log: %w", err)
	}
	cmd := exec.Command(p.Bin, "serve", "--config", p.Config)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("faulttest: start %s: %w", p.Config, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	p.cmd, p.done, p.paused = cmd, done, false
	return nil
}

// Pid is the running process's ID, 0 if it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// Running reports whether the process was started and has not exited.
func (p *Process) Running() bool { return p.Pid() != 0 }

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() { p.stop(syscall.SIGKILL) }

// Terminate sends SIGTERM (a graceful shutdown) and waits for the process to exit.
func (p *Process) Terminate() { p.stop(syscall.SIGTERM) }

func (p *Process) stop(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done, paused := p.cmd, p.done, p.paused
	p.cmd, p.paused = nil, false
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	if paused {
		cmd.Process.Signal(syscall.SIGCONT)
	}
	<-done
}

// Pause sends SIGSTOP: the process holds its sockets but answers nothing.
func (p *Process) Pause() error { return p.signal(syscall.SIGSTOP, true) }

// Resume sends SIGCONT.
func (p *Process) Resume() error { return p.signal(syscall.SIGCONT, false) }

func (p *Process) signal(sig syscall.Signal, paused bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("faulttest: %s is not running", p.Config)
	}
	p.paused = paused
	return p.cmd.Process.Signal(sig)
}
