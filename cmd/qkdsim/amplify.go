package main

import (
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/qkdsim"
)

// amplifyReport is the JSON object of `qkdsim amplify --json`.
type amplifyReport struct {
	InputBits  int     `json:"input_bits"`
	OutputBits int     `json:"output_bits"`
	Ratio      float64 `json:"ratio"`
	Runs       int     `json:"runs"`
	Seconds    float64 `json:"seconds"`    // mean time of one run at Alice's end
	MbitPerS   float64 `json:"mbit_per_s"` // input bits per second at one end (one core)
	Kernel     string  `json:"kernel"`
	EndsAgree  bool    `json:"ends_agree"`
}

const (
	amplifyMinBits = 2
	amplifyMaxBits = 1 << 32
	amplifyMaxRuns = 1000
)

func newAmplifyCmd() *cobra.Command {
	var (
		nbits, runs int
		ratio       float64
		seed        uint64
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "amplify [--bits N] [--ratio R] [--seed S] [--json]",
		Short: "privacy amplification alone: Toeplitz-hash random keys and measure the rate",
		Long: `Run privacy amplification alone on random keys: Alice draws a modified-Toeplitz seed, sends it
to Bob over an in-memory classical channel, and both hash the same N-bit key to R*N bits. Reports
the output length, whether the ends agree, and the throughput in input bits per second at one end.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nbits < amplifyMinBits || nbits > amplifyMaxBits {
				return fmt.Errorf("qkdsim: --bits %d outside the allowed range [%d, %d]", nbits, amplifyMinBits, amplifyMaxBits)
			}
			if !(ratio > 0 && ratio <= 1) {
				return fmt.Errorf("qkdsim: --ratio %g outside the allowed range (0, 1]", ratio)
			}
			if runs < 1 || runs > amplifyMaxRuns {
				return fmt.Errorf("qkdsim: --runs %d outside the allowed range [1, %d]", runs, amplifyMaxRuns)
			}
			var rnd io.Reader = crand.Reader
			if cmd.Flags().Changed("seed") {
				var s [32]byte
				binary.LittleEndian.PutUint64(s[:], seed)
				rnd = rand.NewChaCha8(s)
			}
			rep, err := runAmplify(nbits, int(ratio*float64(nbits)), runs, rnd)
			if err != nil {
				return err
			}
			rep.Ratio = ratio
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			agree := "both ends agree"
			if !rep.EndsAgree {
				agree = "ENDS DIFFER"
			}
			fmt.Fprintf(out, "privacy amplification: %d bits -> %d bits (ratio %g), %d run(s)\n", rep.InputBits, rep.OutputBits, ratio, rep.Runs)
			fmt.Fprintf(out, "  %.1f ms per run, %.1f Mbit/s of input per end (kernel %s); %s\n",
				rep.Seconds*1e3, rep.MbitPerS, rep.Kernel, agree)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&nbits, "bits", 10_000_000, fmt.Sprintf("input key length in bits [%d, %d]", amplifyMinBits, amplifyMaxBits))
	f.Float64Var(&ratio, "ratio", 0.5, "output length as a fraction of the input (0, 1]")
	f.IntVar(&runs, "runs", 3, fmt.Sprintf("number of runs to average [1, %d]", amplifyMaxRuns))
	f.Uint64Var(&seed, "seed", 0, "make keys and Toeplitz seeds reproducible (unsigned 64-bit integer; default: random)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// runAmplify hashes runs random n-bit keys to m bits at both ends of an in-memory channel and
// times Alice's end (seed draw, exchange, hash); Bob hashes concurrently on the other core.
func runAmplify(n, m, runs int, rnd io.Reader) (amplifyReport, error) {
	rep := amplifyReport{InputBits: n, OutputBits: m, Runs: runs, Kernel: qkdsim.ToeplitzKernel(), EndsAgree: true}
	raw := make([]byte, (n+7)/8)
	var total time.Duration
	for range runs {
		if _, err := io.ReadFull(rnd, raw); err != nil {
			return rep, fmt.Errorf("qkdsim: draw random key: %w", err)
		}
		key := qkdsim.BitsFromBytes(raw, n)
		a, b, _, _, closeFn := qkdsim.Pipe()
		type result struct {
			out qkdsim.Bits
			err error
		}
		bobDone := make(chan result, 1)
		go func() {
			out, err := qkdsim.AmplifyBob(b, key, m)
			if err != nil {
				closeFn()
			}
			bobDone <- result{out, err}
		}()
		start := time.Now()
		outA, errA := qkdsim.AmplifyAlice(a, key, m, rnd)
		total += time.Since(start)
		rb := <-bobDone
		closeFn()
		if errA != nil {
			return rep, errA
		}
		if rb.err != nil {
			return rep, rb.err
		}
		if outA.N != m || qkdsim.Diff(outA, rb.out) != 0 {
			rep.EndsAgree = false
		}
	}
	rep.Seconds = total.Seconds() / float64(runs)
	rep.MbitPerS = float64(n) / rep.Seconds / 1e6
	return rep, nil
}
