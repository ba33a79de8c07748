package main

import (
	"bytes"
	"encoding/json"
	"testing"
)

// At 0 km the PLOB bound is infinite, which JSON cannot carry: it must come out as null and
// the rest of the object must still be there.
func TestRunJSONAtZeroDistance(t *testing.T) {
	cmd := newRunCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"--distance", "0", "--pulses", "2e7", "--seed", "3", "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v", err)
	}
	if v, ok := got["plob_per_pulse"]; !ok || v != nil {
		t.Fatalf("plob_per_pulse = %v, want null", v)
	}
	for _, k := range []string{"preset", "distance_km", "pulses", "sifted_bits", "qber", "phase_error_bound", "leaked_ec_bits",
		"efficiency_f", "final_bits", "secret_key_rate_per_pulse", "secret_key_rate_bps", "aborted", "abort_reason"} {
		if _, ok := got[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
}
