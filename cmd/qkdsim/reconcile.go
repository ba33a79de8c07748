package main

// qkdsim reconcile: Cascade and verification alone on random keys, to measure reconciliation
// efficiency, round trips, frame error rate and speed (issue 2, "Command line").

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/qkms/qkms/qkdsim"
	"github.com/spf13/cobra"
)

type reconcileResult struct {
	Variant        string  `json:"variant"`
	QBER           float64 `json:"qber"`
	Bits           int     `json:"bits"`
	Runs           int     `json:"runs"`
	Errors         string  `json:"errors"`
	Seed           uint64  `json:"seed"`
	EfficiencyF    float64 `json:"efficiency_f"`
	EfficiencyFMax float64 `json:"efficiency_f_max"`
	LeakedBits     float64 `json:"leaked_bits"`
	RoundTrips     float64 `json:"round_trips"`
	Messages       float64 `json:"messages"`
	ResidualFrames int     `json:"frames_with_residual_errors"`
	FrameErrors    int     `json:"frame_errors"`
	FrameErrorRate float64 `json:"frame_error_rate"`
	VerifyLeaked   int     `json:"verify_leaked_bits"`
	EpsCor         float64 `json:"eps_cor"`
	Seconds        float64 `json:"seconds"`
	MbitPerS       float64 `json:"mbit_per_s"`
}

func newReconcileCmd() *cobra.Command {
	var (
		qber    float64
		n       int
		runs    int
		variant string
		seed    uint64
		errMode string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Cascade and verification alone on random keys",
		Long: "Reconciles random keys with Cascade and verifies them with a universal hash. Bob's copy\n" +
			"has exactly round(qber*bits) errors at random positions (--errors exact) or an error\n" +
			"on each bit with probability qber (--errors bernoulli).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !(qber >= 0 && qber < 0.5) {
				return fmt.Errorf("--qber %v is outside the allowed range [0, 0.5)", qber)
			}
			if n <= 0 || n > math.MaxInt32 {
				return fmt.Errorf("--bits %d is outside the allowed range [1, %d]", n, math.MaxInt32)
			}
			if runs <= 0 {
				return fmt.Errorf("--runs %d is outside the allowed range [1, inf)", runs)
			}
			v, err := qkdsim.ParseCascadeVariant(variant)
			if err != nil {
				return fmt.Errorf("--cascade %q: allowed values are original and yan", variant)
			}
			if errMode != "exact" && errMode != "bernoulli" {
				return fmt.Errorf("--errors %q: allowed values are exact and bernoulli", errMode)
			}
			if !cmd.Flags().Changed("seed") {
				var b [8]byte
				if _, err := rand.Read(b[:]); err != nil {
					return fmt.Errorf("draw seed: %w", err)
				}
				seed = binary.LittleEndian.Uint64(b[:])
			}
			res, err := runReconcile(cmd.ErrOrStderr(), v, qber, n, runs, errMode, seed, !asJSON)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				return enc.Encode(res)
			}
			fmt.Fprintf(out, "Cascade %s, QBER %.4g, %d bits x %d runs (%s errors, seed %d)\n", res.Variant, res.QBER, res.Bits, res.Runs, res.Errors, res.Seed)
			fmt.Fprintf(out, "  efficiency f       %.4f mean, %.4f worst  (leaked / (n h(QBER)))\n", res.EfficiencyF, res.EfficiencyFMax)
			fmt.Fprintf(out, "  leaked             %.0f parity bits per frame + %d verification tag bits\n", res.LeakedBits, res.VerifyLeaked)
			fmt.Fprintf(out, "  round trips        %.1f per frame (%.1f messages)\n", res.RoundTrips, res.Messages)
			fmt.Fprintf(out, "  frame error rate   %.4g after verification (%d of %d frames dropped; eps_cor %.2g)\n", res.FrameErrorRate, res.FrameErrors, res.Runs, res.EpsCor)
			fmt.Fprintf(out, "  speed              %.2f Mbit/s (both parties, wall clock)\n", res.MbitPerS)
			return nil
		},
	}
	f := cmd.Flags()
	f.Float64Var(&qber, "qber", 0.02, "quantum bit error rate of Bob's copy, in [0, 0.5)")
	f.IntVar(&n, "bits", 1_000_000, "key length per frame")
	f.IntVar(&runs, "runs", 10, "number of frames")
	f.StringVar(&variant, "cascade", string(qkdsim.CascadeYan), "Cascade variant: original or yan")
	f.Uint64Var(&seed, "seed", 0, "seed that makes the run reproducible (random if unset)")
	f.StringVar(&errMode, "errors", "exact", "error model: exact (round(qber*bits) errors) or bernoulli")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// reconcileRand makes a reproducible io.Reader from the run's seed and a stream label.
func reconcileRand(seed uint64, stream uint64) *mrand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], stream)
	return mrand.NewChaCha8(s)
}

func runReconcile(progress io.Writer, v qkdsim.CascadeVariant, q float64, n, runs int, errMode string, seed uint64, showProgress bool) (reconcileResult, error) {
	res := reconcileResult{Variant: string(v), QBER: q, Bits: n, Runs: runs, Errors: errMode, Seed: seed,
		EpsCor: qkdsim.VerifyEpsCor(n)}
	if f, ok := progress.(*os.File); !ok || !reconcileIsTerminal(f) {
		showProgress = false
	}
	h := reconcileEntropy(q)
	var total time.Duration
	for run := 0; run < runs; run++ {
		gen := reconcileRand(seed, uint64(3*run))
		alice := qkdsim.NewBits(n)
		for i := range alice.W {
			alice.W[i] = gen.Uint64()
		}
		if r := n & 63; r != 0 {
			alice.W[len(alice.W)-1] &= 1<<uint(r) - 1
		}
		bob := alice.Clone()
		reconcileAddErrors(gen, bob, q, errMode)

		ca, cb, _, _, closeFn := qkdsim.Pipe()
		var (
			wg             sync.WaitGroup
			statsA         qkdsim.ReconcileStats
			errA, errVA    error
			leakVA, leakVB int
		)
		start := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			statsA, errA = qkdsim.CascadeAlice(ca, alice, v)
			if errA != nil {
				closeFn()
				return
			}
			leakVA, errVA = qkdsim.VerifyAlice(ca, alice, reconcileRand(seed, uint64(3*run+1)))
		}()
		statsB, errB := qkdsim.CascadeBob(cb, bob, q, v, reconcileRand(seed, uint64(3*run+2)))
		var errVB error
		if errB != nil {
			closeFn()
		} else {
			leakVB, errVB = qkdsim.VerifyBob(cb, bob)
		}
		wg.Wait()
		total += time.Since(start)
		closeFn()
		if errA != nil || errB != nil {
			return res, fmt.Errorf("run %d: cascade failed: %w", run, errors.Join(errA, errB))
		}
		failed := errors.Is(errVA, qkdsim.ErrVerifyFailed) || errors.Is(errVB, qkdsim.ErrVerifyFailed)
		if !failed && (errVA != nil || errVB != nil) {
			return res, fmt.Errorf("run %d: verification: %w", run, errors.Join(errVA, errVB))
		}
		if failed {
			res.FrameErrors++
		}
		if qkdsim.Diff(alice, bob) != 0 {
			res.ResidualFrames++
			if !failed {
				return res, fmt.Errorf("run %d: keys differ but verification passed", run)
			}
		}
		res.VerifyLeaked = max(leakVA, leakVB)
		res.LeakedBits += float64(statsB.LeakedBits)
		res.RoundTrips += float64(statsB.RoundTrips)
		res.Messages += float64(statsB.Messages)
		if statsA != statsB {
			return res, fmt.Errorf("run %d: Alice counted %+v, Bob %+v", run, statsA, statsB)
		}
		if h > 0 {
			f := float64(statsB.LeakedBits) / (float64(n) * h)
			res.EfficiencyFMax = math.Max(res.EfficiencyFMax, f)
		}
		if showProgress {
			fmt.Fprintf(progress, "\r[%-30s] %d/%d", reconcileBar(run+1, runs, 30), run+1, runs)
		}
	}
	if showProgress {
		fmt.Fprintln(progress)
	}
	r := float64(runs)
	res.LeakedBits /= r
	res.RoundTrips /= r
	res.Messages /= r
	if h > 0 {
		res.EfficiencyF = res.LeakedBits / (float64(n) * h)
	}
	res.FrameErrorRate = float64(res.FrameErrors) / r
	res.Seconds = total.Seconds()
	if total > 0 {
		res.MbitPerS = float64(n) * r / total.Seconds() / 1e6
	}
	return res, nil
}

func reconcileAddErrors(gen *mrand.ChaCha8, bob qkdsim.Bits, q float64, mode string) {
	n := bob.N
	r := mrand.New(gen)
	if mode == "bernoulli" {
		for i := 0; i < n; i++ {
			if r.Float64() < q {
				bob.Flip(i)
			}
		}
		return
	}
	// Exactly round(q n) distinct positions (Floyd's sampling).
	k := int(math.Round(q * float64(n)))
	chosen := make(map[int]struct{}, k)
	for j := n - k; j < n; j++ {
		t := r.IntN(j + 1)
		if _, dup := chosen[t]; dup {
			t = j
		}
		chosen[t] = struct{}{}
		bob.Flip(t)
	}
}

func reconcileEntropy(q float64) float64 {
	if q <= 0 || q >= 1 {
		return 0
	}
	return -q*math.Log2(q) - (1-q)*math.Log2(1-q)
}

func reconcileBar(done, total, width int) string {
	k := done * width / total
	b := make([]byte, width)
	for i := range b {
		b[i] = ' '
		if i < k {
			b[i] = '='
		}
	}
	return string(b)
}

func reconcileIsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
