package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/qkms/qkms/qkdsim"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// linkFlags are the flags shared by run and sweep: the preset and an override for every
// parameter.
type linkFlags struct {
	preset      string
	over        qkdsim.Params
	eveFraction float64
	pns         bool
	cascade     string
	seed        string
	blockPulses int64
	fs          *pflag.FlagSet
}

func (f *linkFlags) register(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.preset, "preset", "apd", "parameter preset: gys, apd, snspd")
	fs.Float64Var(&f.over.Alpha, "alpha", 0, "fibre loss, dB/km (default from preset)")
	fs.Float64Var(&f.over.EtaB, "eta-det", 0, "detector efficiency in (0,1] (default from preset)")
	fs.Float64Var(&f.over.Y0, "dark-count", 0, "dark-count probability per pulse (default from preset)")
	fs.Float64Var(&f.over.Ed, "misalignment", 0, "misalignment error probability (default from preset)")
	fs.Float64Var(&f.over.F, "f", 0, "error-correction efficiency of the analytic formula (default from preset)")
	fs.Float64Var(&f.over.Mu, "mu", 0, "signal mean photon number (default 0.48)")
	fs.Float64Var(&f.over.Nu, "nu", 0, "weak decoy mean photon number (default 0.1)")
	fs.Float64Var(&f.over.PMu, "p-mu", 0, "probability of a signal pulse (default 0.8)")
	fs.Float64Var(&f.over.PNu, "p-nu", 0, "probability of a weak decoy pulse (default 0.1; vacuum gets the rest)")
	fs.Float64Var(&f.over.PZ, "p-z", 0, "probability of the Z basis (default 0.5)")
	fs.Float64Var(&f.over.PulseRate, "rate", 0, "pulse rate in Hz (default 1e9)")
	fs.Float64Var(&f.over.EpsSec, "eps-sec", 0, "secrecy parameter (default 1e-10)")
	fs.Float64Var(&f.over.EpsCor, "eps-cor", 0, "correctness parameter (default 1e-15)")
	fs.Float64Var(&f.over.QBERThreshold, "qber-threshold", 0, "abort above this QBER (default 0.11)")
	fs.Float64Var(&f.over.SampleFraction, "sample-fraction", 0, "share of sifted signal bits sacrificed for the QBER (default 0.05)")
	fs.Float64Var(&f.eveFraction, "eve-fraction", 0, "intercept-resend on this fraction of pulses, in [0,1]")
	fs.BoolVar(&f.pns, "pns", false, "photon-number-splitting attack on multi-photon pulses")
	fs.StringVar(&f.cascade, "cascade", "yan", "Cascade variant: original, yan")
	fs.StringVar(&f.seed, "seed", "", "random seed (unsigned 64-bit integer); default random")
	fs.Int64Var(&f.blockPulses, "block-pulses", qkdsim.DefaultPulsesPerBlock, "pulses per post-processing block")
}

// params returns the preset with every flag the user set applied, validated.
func (f *linkFlags) params() (qkdsim.Params, error) {
	p, err := qkdsim.Preset(f.preset)
	if err != nil {
		return p, err
	}
	set := map[string]*float64{"alpha": &p.Alpha, "eta-det": &p.EtaB, "dark-count": &p.Y0, "misalignment": &p.Ed,
		"f": &p.F, "mu": &p.Mu, "nu": &p.Nu, "p-mu": &p.PMu, "p-nu": &p.PNu, "p-z": &p.PZ, "rate": &p.PulseRate,
		"eps-sec": &p.EpsSec, "eps-cor": &p.EpsCor, "qber-threshold": &p.QBERThreshold, "sample-fraction": &p.SampleFraction}
	src := map[string]float64{"alpha": f.over.Alpha, "eta-det": f.over.EtaB, "dark-count": f.over.Y0, "misalignment": f.over.Ed,
		"f": f.over.F, "mu": f.over.Mu, "nu": f.over.Nu, "p-mu": f.over.PMu, "p-nu": f.over.PNu, "p-z": f.over.PZ, "rate": f.over.PulseRate,
		"eps-sec": f.over.EpsSec, "eps-cor": f.over.EpsCor, "qber-threshold": f.over.QBERThreshold, "sample-fraction": f.over.SampleFraction}
	for name, dst := range set {
		if f.fs.Changed(name) {
			*dst = src[name]
		}
	}
	return p, p.Validate()
}

func (f *linkFlags) config(distance float64) (qkdsim.LinkConfig, error) {
	p, err := f.params()
	if err != nil {
		return qkdsim.LinkConfig{}, err
	}
	if err := qkdsim.ValidateDistance(distance); err != nil {
		return qkdsim.LinkConfig{}, err
	}
	if f.blockPulses <= 0 {
		return qkdsim.LinkConfig{}, fmt.Errorf("block-pulses = %d is out of range; allowed >= 1", f.blockPulses)
	}
	var seed uint64
	if f.seed == "" {
		seed = uint64(time.Now().UnixNano())
	} else if seed, err = strconv.ParseUint(f.seed, 0, 64); err != nil {
		return qkdsim.LinkConfig{}, fmt.Errorf("seed = %q is malformed; allowed an unsigned 64-bit integer (decimal or 0x hex)", f.seed)
	}
	eve := qkdsim.Eve{InterceptFraction: f.eveFraction, PNS: f.pns}
	if err := eve.Validate(); err != nil {
		return qkdsim.LinkConfig{}, err
	}
	if f.cascade != string(qkdsim.CascadeOriginal) && f.cascade != string(qkdsim.CascadeYan) {
		return qkdsim.LinkConfig{}, fmt.Errorf("cascade = %q is unknown; allowed original, yan", f.cascade)
	}
	return qkdsim.LinkConfig{Params: p, Distance: distance, PulsesPerBlock: f.blockPulses, Cascade: qkdsim.CascadeVariant(f.cascade),
		Seed: seed, EveFraction: f.eveFraction, PNS: f.pns}, nil
}

func newRunCmd() *cobra.Command {
	var lf linkFlags
	var distance, pulses float64
	var duration time.Duration
	var asJSON, ideal bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "simulate a link at one distance and run the full post-processing chain",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := lf.config(distance)
			if err != nil {
				return err
			}
			n := pulses
			if cmd.Flags().Changed("duration") {
				if cmd.Flags().Changed("pulses") {
					return fmt.Errorf("give --pulses or --duration, not both")
				}
				if duration <= 0 {
					return fmt.Errorf("duration = %s is out of range; allowed > 0", duration)
				}
				n = math.Round(duration.Seconds() * cfg.Params.PulseRate)
			}
			if math.IsNaN(n) || n < 1 || n > 1e18 {
				return fmt.Errorf("pulses = %g is out of range; allowed [1, 1e18]", n)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			var st qkdsim.RunStats
			if ideal {
				st, err = qkdsim.SimulateAsymptotic(cfg.Params, distance, qkdsim.Eve{InterceptFraction: cfg.EveFraction, PNS: cfg.PNS}, int64(n), cfg.Seed)
			} else {
				bar := newProgress(cmd.ErrOrStderr(), int64(n) > cfg.PulsesPerBlock)
				st, err = qkdsim.RunPulses(ctx, cfg, int64(n), bar.update)
				bar.done()
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printRun(cmd.OutOrStdout(), st)
			return nil
		},
	}
	lf.register(cmd.Flags())
	cmd.Flags().Float64Var(&distance, "distance", 50, "fibre length in km")
	cmd.Flags().Float64Var(&pulses, "pulses", 1e9, "number of pulses to send")
	cmd.Flags().DurationVar(&duration, "duration", 0, "send pulses for this long at the pulse rate (instead of --pulses)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().BoolVar(&ideal, "ideal", false, "asymptotic mode: sampled counts, ideal decoy estimation, no post-processing")
	return cmd
}

func printRun(w io.Writer, st qkdsim.RunStats) {
	fmt.Fprintf(w, "link           %s, %.1f km, %d pulses in %d block(s)\n", st.Preset, st.DistanceKM, st.Pulses, st.Blocks)
	fmt.Fprintf(w, "detected       %d events, %d sifted bits (%d sacrificed for estimation)\n", st.DetectedEvents, st.SiftedBits, st.SampleBits)
	fmt.Fprintf(w, "QBER           %.4f   phase error bound %.4f\n", st.QBER, st.PhaseErrorBound)
	fmt.Fprintf(w, "decoy          Y1 >= %.4g (true %.4g), e1 <= %.4f (true %.4f)\n", st.Y1Lower, st.Y1True, st.E1Upper, st.E1True)
	fmt.Fprintf(w, "reconciliation %d bits leaked, f = %.3f, %d round trips; verification tag %d bits\n", st.LeakedECBits, st.EfficiencyF, st.RoundTrips, st.VerifyTagBits)
	fmt.Fprintf(w, "channel        %d messages, %d bytes, %d bits revealed; %d authentication bits consumed\n", st.Messages, st.ChannelBytes, st.RevealedBits, st.AuthBitsConsumed)
	fmt.Fprintf(w, "final key      %d bits\n", st.FinalBits)
	fmt.Fprintf(w, "key rate       %.4g bits/pulse = %.4g bit/s  (analytic asymptotic %.4g, PLOB %.4g bits/pulse)\n",
		st.SecretKeyRatePerPulse, st.SecretKeyRateBps, st.AnalyticRatePerPulse, st.PLOBPerPulse)
	if st.Aborted {
		fmt.Fprintf(w, "ABORTED        %d of %d block(s): %s\n", st.AbortedBlocks, st.Blocks, st.AbortReason)
	}
	fmt.Fprintf(w, "processing     %.2f s, %.1f Mbit/s of sifted key\n", st.ElapsedSeconds, st.SiftedMbitPerSecond)
}

// progress draws a bar on a terminal's stderr; it does nothing elsewhere.
type progress struct {
	w     io.Writer
	on    bool
	start time.Time
}

func newProgress(w io.Writer, long bool) *progress {
	on := false
	if f, ok := w.(*os.File); ok && long {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progress{w: w, on: on, start: time.Now()}
}

func (p *progress) update(done, total int64) {
	if !p.on {
		return
	}
	const width = 40
	frac := float64(done) / float64(total)
	n := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '.'
		if i < n {
			bar[i] = '#'
		}
	}
	fmt.Fprintf(p.w, "\r[%s] %5.1f%%  %s", bar, 100*frac, time.Since(p.start).Round(time.Second))
}

func (p *progress) done() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}
