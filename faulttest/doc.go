// Package faulttest owns the fault-test harness of qkms (issue 4, "Proof under faults"): it
// runs two 3-node sites as separate `qkms serve` processes on loopback, injects crashes,
// partitions, pauses, snapshot installs and peer-channel cuts, records every ETSI GS QKD 014
// operation of concurrent SAE clients and checks the history with porcupine.
//
// The non-test files hold the reusable pieces: Proxy, a TCP relay placed in front of every raft
// and peer listener that can blackhole traffic (whole or per source process), and Process, one
// node process that can be killed, paused and restarted. The experiment itself is in the tests.
package faulttest
