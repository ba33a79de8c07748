package keydelivery

import (
	"bytes"
	"testing"

	"github.com/qkms/qkms/api/keyspb"
)

func TestServerCodecWipesDeliveredKeys(t *testing.T) {
	c := ServerCodec()
	tests := []struct {
		name  string
		msg   func(key []byte) any
		wiped bool
	}{
		{"key container", func(k []byte) any {
			return &keyspb.KeyContainer{Keys: []*keyspb.Key{{KeyId: "a", Key: k}}}
		}, true},
		{"other message", func(k []byte) any { return &keyspb.Key{KeyId: "a", Key: k} }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := []byte("0123456789abcdef0123456789abcdef")
			want := bytes.Clone(key)
			out, err := c.Marshal(tc.msg(key))
			if err != nil {
				t.Fatal(err)
			}
			defer out.Free()
			if wiped := bytes.Equal(key, make([]byte, len(key))); wiped != tc.wiped {
				t.Fatalf("key wiped: %v, want %v", wiped, tc.wiped)
			}
			// The encoding holds the key as it was before the wipe.
			got := tc.msg(nil)
			if err := c.Unmarshal(out, got); err != nil {
				t.Fatal(err)
			}
			var k []byte
			switch m := got.(type) {
			case *keyspb.KeyContainer:
				k = m.GetKeys()[0].GetKey()
			case *keyspb.Key:
				k = m.GetKey()
			}
			if !bytes.Equal(k, want) {
				t.Fatalf("decoded key %x, want %x", k, want)
			}
		})
	}
}
