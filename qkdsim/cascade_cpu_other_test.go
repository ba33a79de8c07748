//go:build !unix

package qkdsim

import "time"

func processCPU() time.Duration { return 0 }
