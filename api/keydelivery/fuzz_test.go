package keydelivery

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/pki"
)

// The fuzz tests feed every request message handler arbitrary wire bytes, as a client could
// send them: whatever decodes must be answered with a status of a known code, and whatever
// reaches the Service must have passed the checks.

// checkStatus fails unless err is nil or a status with one of the codes the package answers.
func checkStatus(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error without a status: %v", err)
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.ResourceExhausted,
		codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
	default:
		t.Fatalf("unexpected code %v: %v", st.Code(), err)
	}
	if st.Message() == "" {
		t.Fatalf("%v without a message", st.Code())
	}
}

// checkIssued fails if the Service was asked for keys by a request the checks should refuse.
func checkIssued(t *testing.T, f *fakeService) {
	t.Helper()
	for _, r := range f.reqs {
		if r.Number < 1 || r.Size < 0 || r.Size%8 != 0 || (r.KeyIDs != nil && len(r.KeyIDs) != r.Number) || r.TTL < 0 {
			t.Fatalf("service got %+v", r)
		}
		for _, id := range r.AdditionalSlaves {
			if pki.CheckID(id) != nil {
				t.Fatalf("service got slave %q", id)
			}
		}
	}
	for _, ids := range f.fetchs {
		seen := map[string]bool{}
		for _, id := range ids {
			if checkKeyID(id) != nil || seen[id] {
				t.Fatalf("service got key IDs %q", ids)
			}
			seen[id] = true
		}
	}
}

func addSeeds(f *testing.F, msgs ...proto.Message) {
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff})
}

func callerCtx() context.Context { return asCaller(context.Background(), pki.RoleSAE, "SAE-A1") }

func FuzzGetStatus(f *testing.F) {
	addSeeds(f, &keyspb.GetStatusRequest{SlaveSaeId: "SAE-B1"}, &keyspb.GetStatusRequest{SlaveSaeId: "a/b"})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req keyspb.GetStatusRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		_, err := newTestServer(newFakeService(10)).GetStatus(callerCtx(), &req)
		checkStatus(t, err)
	})
}

func FuzzGetKey(f *testing.F) {
	addSeeds(f, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1", Number: 3, Size: 512},
		&keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1", Size: 100, AdditionalSlaveSaeIds: []string{"SAE-B2", "SAE-B2"}},
		&keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1", Number: -5, AdditionalSlaveSaeIds: []string{"..", ""}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req keyspb.GetKeyRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		fs := newFakeService(10)
		kc, err := newTestServer(fs).GetKey(callerCtx(), &req)
		checkStatus(t, err)
		checkIssued(t, fs)
		if err == nil && len(kc.GetKeys()) != max(1, int(req.GetNumber())) {
			t.Fatalf("%d keys for number %d", len(kc.GetKeys()), req.GetNumber())
		}
	})
}

func FuzzGetKeyWithIDs(f *testing.F) {
	addSeeds(f, &keyspb.GetKeyWithIDsRequest{MasterSaeId: "SAE-B1", KeyIds: []string{"a", "b"}},
		&keyspb.GetKeyWithIDsRequest{MasterSaeId: "SAE-B1", KeyIds: []string{"a", "a", "\x00"}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req keyspb.GetKeyWithIDsRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		fs := newFakeService(10)
		_, err := newTestServer(fs).GetKeyWithIDs(callerCtx(), &req)
		checkStatus(t, err)
		checkIssued(t, fs)
	})
}

// The stream handlers run on a cancelled context, so every stream ends at its first wait.
func cancelledCaller() context.Context {
	ctx, cancel := context.WithCancel(callerCtx())
	cancel()
	return ctx
}

func FuzzStreamKeys(f *testing.F) {
	addSeeds(f, &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", ChunkSize: 256, Rate: 100, MaxKeys: 3},
		&keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 1e4, MinRate: 1e4, Ttl: durationpb.New(time.Hour)},
		&keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 5, Ttl: &durationpb.Duration{Seconds: 1, Nanos: -1}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req keyspb.StreamKeysRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		fs := newFakeService(50)
		err := newTestServer(fs).StreamKeys(&req, &fakeStream{ctx: cancelledCaller()})
		checkStatus(t, err)
		checkIssued(t, fs)
	})
}

func FuzzFollowKeys(f *testing.F) {
	addSeeds(f, &keyspb.FollowKeysRequest{MasterSaeId: "SAE-B1", StreamId: "6ba7b810-9dad-11d1-80b4-00c04fd430c8", FromSeq: 3},
		&keyspb.FollowKeysRequest{MasterSaeId: "SAE-B1", StreamId: "6BA7B810-9DAD-11D1-80B4-00C04FD430C8", MaxKeys: -1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req keyspb.FollowKeysRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		fs := newFakeService(10)
		err := newTestServer(fs).FollowKeys(&req, &fakeStream{ctx: cancelledCaller()})
		checkStatus(t, err)
		checkIssued(t, fs)
	})
}
