//go:build unix

package qkdsim

import (
	"syscall"
	"time"
)

// processCPUTime is the user+system CPU time of this process, so benchmarks can report a rate
// per CPU-second that other work on the shared cores does not distort.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
