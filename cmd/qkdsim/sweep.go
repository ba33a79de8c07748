package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/qkms/qkms/qkdsim"
	"github.com/spf13/cobra"
)

type sweepPoint struct {
	km                  float64
	sim, analytic, plob float64 // bits per pulse
	qber                float64
	aborted             bool
}

func newSweepCmd() *cobra.Command {
	var lf linkFlags
	var from, to, step, pulses float64
	var plot, csvPath string
	var ideal bool
	cmd := &cobra.Command{
		Use:   "sweep",
		Short: "key rate versus distance: simulated points, analytic decoy-state curve and PLOB bound",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if math.IsNaN(step) || step <= 0 {
				return fmt.Errorf("step = %g is out of range; allowed > 0", step)
			}
			if err := qkdsim.ValidateDistance(from); err != nil {
				return fmt.Errorf("from: %w", err)
			}
			if err := qkdsim.ValidateDistance(to); err != nil || to < from {
				return fmt.Errorf("to = %g is out of range; allowed [from=%g, 10000] km", to, from)
			}
			if (to-from)/step > 10000 {
				return fmt.Errorf("step = %g gives more than 10000 points; allowed >= %g", step, (to-from)/10000)
			}
			if math.IsNaN(pulses) || pulses < 1 || pulses > 1e18 {
				return fmt.Errorf("pulses = %g is out of range; allowed [1, 1e18]", pulses)
			}
			base, err := lf.config(from)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			var pts []sweepPoint
			for km := from; km <= to+1e-9; km += step {
				cfg := base
				cfg.Distance = km
				var st qkdsim.RunStats
				if ideal {
					st, err = qkdsim.SimulateAsymptotic(cfg.Params, km, qkdsim.Eve{InterceptFraction: cfg.EveFraction, PNS: cfg.PNS}, int64(pulses), cfg.Seed)
				} else {
					st, err = qkdsim.RunPulses(ctx, cfg, int64(pulses), nil)
				}
				if err != nil {
					return fmt.Errorf("at %g km: %w", km, err)
				}
				pts = append(pts, sweepPoint{km: km, sim: st.SecretKeyRatePerPulse, analytic: qkdsim.AnalyticRate(cfg.Params, km),
					plob: qkdsim.PLOB(cfg.Params, km), qber: st.QBER, aborted: st.Aborted})
				if lf.fs.Changed("seed") {
					base.Seed++ // reproducible, yet independent points
				}
			}
			printSweep(cmd.OutOrStdout(), pts, base.Params.PulseRate)
			if csvPath != "" {
				if err := writeFile(csvPath, func(w io.Writer) error { return writeSweepCSV(w, pts) }); err != nil {
					return err
				}
			}
			if plot != "" {
				title := fmt.Sprintf("qkdsim %s: secret key rate vs distance (%.3g pulses per point%s)", base.Params.Preset, pulses, map[bool]string{true: ", ideal estimation"}[ideal])
				if err := writeFile(plot, func(w io.Writer) error { return writeSweepSVG(w, pts, title) }); err != nil {
					return err
				}
			}
			return nil
		},
	}
	lf.register(cmd.Flags())
	cmd.Flags().Float64Var(&from, "from", 0, "first distance, km")
	cmd.Flags().Float64Var(&to, "to", 250, "last distance, km")
	cmd.Flags().Float64Var(&step, "step", 10, "distance step, km")
	cmd.Flags().Float64Var(&pulses, "pulses", 1e9, "pulses per point")
	cmd.Flags().StringVar(&plot, "plot", "", "write an SVG chart to this file")
	cmd.Flags().StringVar(&csvPath, "csv", "", "write the table as CSV to this file")
	cmd.Flags().BoolVar(&ideal, "ideal", false, "asymptotic mode: sampled counts with ideal decoy estimation, no post-processing")
	return cmd
}

func writeFile(path string, fill func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func printSweep(w io.Writer, pts []sweepPoint, rate float64) {
	fmt.Fprintf(w, "%8s  %12s  %12s  %12s  %12s  %7s\n", "km", "sim b/pulse", "sim bit/s", "analytic", "PLOB", "QBER")
	for _, p := range pts {
		mark := ""
		if p.aborted {
			mark = "  aborted"
		}
		fmt.Fprintf(w, "%8.1f  %12.4g  %12.4g  %12.4g  %12.4g  %7.4f%s\n", p.km, p.sim, p.sim*rate, p.analytic, p.plob, p.qber, mark)
	}
}

func writeSweepCSV(w io.Writer, pts []sweepPoint) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"distance_km", "simulated_rate_per_pulse", "analytic_rate_per_pulse", "plob_per_pulse", "qber", "aborted"})
	g := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	for _, p := range pts {
		cw.Write([]string{g(p.km), g(p.sim), g(p.analytic), g(p.plob), g(p.qber), strconv.FormatBool(p.aborted)})
	}
	cw.Flush()
	return cw.Error()
}

// writeSweepSVG draws the three series on a log-scale y axis. Zero rates cannot be drawn on a
// log axis and are left out (the curve ends where the rate reaches zero).
func writeSweepSVG(w io.Writer, pts []sweepPoint, title string) error {
	const W, H, L, R, T, B = 800.0, 500.0, 80.0, 20.0, 40.0, 60.0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		for _, v := range []float64{p.sim, p.analytic, math.Min(p.plob, 10)} {
			if v > 0 && !math.IsInf(v, 0) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1e-9, 1
	}
	ylo, yhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yhi <= ylo {
		yhi = ylo + 1
	}
	xlo, xhi := pts[0].km, pts[len(pts)-1].km
	if xhi <= xlo {
		xhi = xlo + 1
	}
	X := func(km float64) float64 { return L + (km-xlo)/(xhi-xlo)*(W-L-R) }
	Y := func(v float64) float64 { return T + (yhi-math.Log10(v))/(yhi-ylo)*(H-T-B) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%g" y="22" text-anchor="middle" font-size="14">%s</text>`+"\n", W/2, xmlEscape(title))
	for e := ylo; e <= yhi; e++ {
		y := Y(math.Pow(10, e))
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">1e%d</text>`+"\n", L, y, W-R, y, L-6, y+4, int(e))
	}
	nt := 10
	for i := 0; i <= nt; i++ {
		km := xlo + float64(i)*(xhi-xlo)/float64(nt)
		x := X(km)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#eee"/><text x="%.1f" y="%g" text-anchor="middle">%.0f</text>`+"\n", x, T, x, H-B, x, H-B+16, km)
	}
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="black"/>`+"\n", L, T, W-L-R, H-T-B)
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">distance (km)</text>`+"\n", (L+W-R)/2, H-20)
	fmt.Fprintf(&b, `<text x="18" y="%g" text-anchor="middle" transform="rotate(-90 18 %g)">secret key rate (bits per pulse)</text>`+"\n", (T+H-B)/2, (T+H-B)/2)
	line := func(get func(sweepPoint) float64, color, dash string) {
		var d strings.Builder
		pen := "M"
		for _, p := range pts {
			v := get(p)
			if !(v > 0) || math.IsInf(v, 0) || math.Log10(v) > yhi {
				pen = "M"
				continue
			}
			fmt.Fprintf(&d, "%s%.1f,%.1f ", pen, X(p.km), Y(v))
			pen = "L"
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`+"\n", strings.TrimSpace(d.String()), color, dash)
	}
	line(func(p sweepPoint) float64 { return p.plob }, "#888", "6 4")
	line(func(p sweepPoint) float64 { return p.analytic }, "#1f77b4", "none")
	for _, p := range pts {
		if p.sim > 0 {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="#d62728"/>`+"\n", X(p.km), Y(p.sim))
		}
	}
	legend := []struct{ name, color, dash string }{{"PLOB bound", "#888", "6 4"}, {"analytic decoy-state (GLLP)", "#1f77b4", "none"}, {"simulated (full chain)", "#d62728", ""}}
	for i, l := range legend {
		y := T + 16 + float64(i)*18
		x := W - R - 230
		if l.dash == "" {
			fmt.Fprintf(&b, `<circle cx="%g" cy="%g" r="4" fill="%s"/>`, x+12, y-4, l.color)
		} else {
			fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>`, x, y-4, x+24, y-4, l.color, l.dash)
		}
		fmt.Fprintf(&b, `<text x="%g" y="%g">%s</text>`+"\n", x+30, y, l.name)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
