package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func runAmplifyCmd(args ...string) (string, error) {
	cmd := newAmplifyCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestAmplifyCmdRefusesBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--bits", "1"}, "--bits"},
		{[]string{"--bits", "-5"}, "--bits"},
		{[]string{"--ratio", "0"}, "--ratio"},
		{[]string{"--ratio", "1.01"}, "--ratio"},
		{[]string{"--ratio", "NaN"}, "--ratio"},
		{[]string{"--runs", "0"}, "--runs"},
		{[]string{"--seed", "abc"}, "--seed"},
	}
	for _, c := range cases {
		_, err := runAmplifyCmd(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error naming %s", c.args, err, c.want)
		}
	}
}

func TestAmplifyCmdJSON(t *testing.T) {
	out, err := runAmplifyCmd("--bits", "100000", "--ratio", "0.3", "--runs", "2", "--seed", "5", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	if rep["output_bits"] != float64(30000) || rep["ends_agree"] != true {
		t.Fatalf("unexpected report %v", rep)
	}
	if r, ok := rep["mbit_per_s"].(float64); !ok || r <= 0 {
		t.Fatalf("mbit_per_s = %v", rep["mbit_per_s"])
	}
}
