//go:build !unix

package cputime

import "time"

// Process is not measured on this platform: it returns 0, and callers omit per-CPU rates.
func Process() time.Duration { return 0 }
