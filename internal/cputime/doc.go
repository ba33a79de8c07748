// Package cputime reads the CPU time a process has used, for benchmarks that report work per
// CPU-second: on a small shared machine wall-clock rates move with whatever else runs, CPU
// time much less.
package cputime
