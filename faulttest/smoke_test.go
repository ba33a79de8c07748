package faulttest

import (
	"context"
	"testing"

	"github.com/qkms/qkms/api/etsi014"
)

func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	nw := startNetwork(t)
	ctx := context.Background()
	keys, err := nw.nodes[0][1].clients["SAE-A1"].GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 2})
	if err != nil {
		t.Fatal(err)
	}
	got, err := nw.nodes[1][2].clients["SAE-B1"].GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(len(got))
}
