package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestReconcileRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string // the parameter the message must name
	}{
		{[]string{"--qber", "0.5"}, "--qber"},
		{[]string{"--qber", "-0.01"}, "--qber"},
		{[]string{"--bits", "0"}, "--bits"},
		{[]string{"--runs", "0"}, "--runs"},
		{[]string{"--cascade", "ldpc"}, "--cascade"},
		{[]string{"--errors", "burst"}, "--errors"},
		{[]string{"--seed", "x"}, "--seed"},
	}
	for _, tc := range tests {
		cmd := newReconcileCmd()
		cmd.SetArgs(tc.args)
		cmd.SetOut(new(bytes.Buffer))
		cmd.SetErr(new(bytes.Buffer))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}

func TestReconcileJSON(t *testing.T) {
	var out bytes.Buffer
	cmd := newReconcileCmd()
	cmd.SetArgs([]string{"--qber", "0.03", "--bits", "20000", "--runs", "3", "--seed", "7", "--json"})
	cmd.SetOut(&out)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"efficiency_f", "round_trips", "frame_error_rate", "mbit_per_s"} {
		if _, ok := res[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if f := res["efficiency_f"].(float64); f < 1 || f > 1.5 {
		t.Errorf("efficiency_f = %v, want in [1, 1.5]", f)
	}
	if fer := res["frame_error_rate"].(float64); fer != 0 {
		t.Errorf("frame_error_rate = %v, want 0", fer)
	}
}
