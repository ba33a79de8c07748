//go:build !unix

package qkdsim

import "time"

// processCPUTime is not measured on this platform; benchmarks then omit the per-CPU rate.
func processCPUTime() time.Duration { return 0 }
