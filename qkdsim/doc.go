// Package qkdsim simulates a decoy-state BB84 QKD link over fibre and runs the real classical
// post-processing chain on the simulated bits: sifting, parameter estimation (with decoy-state
// bounds), Cascade reconciliation, verification by a universal hash, privacy amplification by
// Toeplitz hashing, and Wegman-Carter authentication of the classical channel. Alice and Bob are
// separate parties that talk only through a Channel, and both ends of a Link yield identical key
// blocks. Each stage lives in a file named after it and cites the paper it follows.
package qkdsim
