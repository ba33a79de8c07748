package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/qkdsim"
	"github.com/qkms/qkms/site"
)

// devicesFile is DIR/devices.json, written once both simulated devices hold key.
type devicesFile struct {
	CA      string         `json:"ca"`
	Devices []deviceRecord `json:"devices"`
}

type deviceRecord struct {
	KMEID      string `json:"kme_id"`
	ETSI014URL string `json:"etsi014_url"`
	SAEID      string `json:"sae_id"` // the consumer this device serves
	Cert       string `json:"cert"`   // that consumer's client certificate
	Key        string `json:"key"`
}

func newServeCmd() *cobra.Command {
	var (
		dir, preset, saeA, saeB, listenA, listenB string
		distance                                  float64
		fast                                      bool
		seed                                      uint64
	)
	cmd := &cobra.Command{
		Use:   "serve --dir DIR",
		Short: "run a simulated QKD device pair exposing ETSI GS QKD 014 at each end",
		Long: `Run two simulated QKD devices (QKD-A and QKD-B) joined by a simulated link, each serving
ETSI GS QKD 014 to one consumer (by default the qkms sites KME-A and KME-B), so a key manager can
take key from them as from vendor hardware. Certificates are written to DIR/pki and DIR/devices.json
lists the endpoints once both devices hold key.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--dir is required")
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			params, err := qkdsim.Preset(preset)
			if err != nil {
				return err
			}
			pair, err := site.StartPair(site.PairConfig{
				Dir:     abs,
				KMEs:    [2]string{"QKD-A", "QKD-B"},
				SAEs:    [2][]string{{saeA}, {saeB}},
				Link:    &qkdsim.LinkConfig{Name: "dev", Params: params, Distance: distance, Seed: seed, Paced: !fast},
				ETSI014: [2]string{listenA, listenB},
				Logger:  slog.Default(),
			})
			if err != nil {
				return err
			}
			defer pair.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if err := pair.WaitForKey(ctx, 4096); err != nil {
				return err
			}
			df := devicesFile{CA: pair.Layout.CACert}
			for i, n := range pair.Sites {
				e, _ := pair.Layout.Find(pair.SAEs[i][0])
				df.Devices = append(df.Devices, deviceRecord{KMEID: n.KMEID(), ETSI014URL: "https://" + n.ETSI014Addr(),
					SAEID: e.ID, Cert: e.Cert, Key: e.Key})
			}
			b, _ := json.MarshalIndent(df, "", "  ")
			if err := os.WriteFile(filepath.Join(abs, "devices.json"), append(b, '\n'), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "simulated QKD devices ready: %s\n", strings.Join([]string{
				df.Devices[0].KMEID + " " + df.Devices[0].ETSI014URL, df.Devices[1].KMEID + " " + df.Devices[1].ETSI014URL}, ", "))
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for certificates, state and devices.json")
	cmd.Flags().StringVar(&preset, "preset", "apd", "link preset: gys, apd, snspd")
	cmd.Flags().Float64Var(&distance, "distance", 25, "fibre length in km")
	cmd.Flags().BoolVar(&fast, "fast", false, "produce key as fast as the simulator runs instead of at the physical rate")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "simulator seed")
	cmd.Flags().StringVar(&saeA, "sae-a", "KME-A", "SAE ID of the consumer of device QKD-A")
	cmd.Flags().StringVar(&saeB, "sae-b", "KME-B", "SAE ID of the consumer of device QKD-B")
	cmd.Flags().StringVar(&listenA, "listen-a", "127.0.0.1:0", "ETSI 014 listen address of device QKD-A")
	cmd.Flags().StringVar(&listenB, "listen-b", "127.0.0.1:0", "ETSI 014 listen address of device QKD-B")
	return cmd
}
