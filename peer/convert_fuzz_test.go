package peer

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/qkms/qkms/api/peerpb"
	"github.com/qkms/qkms/kms"
)

func mustMarshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzReservationFromProto: any bytes from a peer either fail to decode, fail validation, or
// give a reservation that passes validation and survives a round trip unchanged. Never a panic.
func FuzzReservationFromProto(f *testing.F) {
	good := reservation("0f8c3b4e-2a1d-4c5e-9f7a-6b5c4d3e2f10", "KME-A", "KME-B")
	f.Add(mustMarshal(f, reservationToProto(good)))
	pqc := good
	pqc.Provenance, pqc.Ranges, pqc.Epoch = kms.ProvenancePQC, nil, "00112233445566778899aabbccddeeff"
	f.Add(mustMarshal(f, reservationToProto(pqc)))
	f.Add([]byte{})
	f.Add([]byte{0x38, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		var pb peerpb.Reservation
		if proto.Unmarshal(data, &pb) != nil {
			return
		}
		r, err := reservationFromProto(&pb)
		if err != nil {
			return
		}
		if err := checkReservation(r); err != nil {
			t.Fatalf("accepted reservation fails its own check: %v", err)
		}
		back, err := reservationFromProto(reservationToProto(r))
		if err != nil {
			t.Fatalf("round trip of an accepted reservation fails: %v", err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip changed the reservation:\n got %+v\nwant %+v", back, r)
		}
	})
}

// FuzzRequests runs every request decoder of the server on arbitrary bytes.
func FuzzRequests(f *testing.F) {
	good := reservation("0f8c3b4e-2a1d-4c5e-9f7a-6b5c4d3e2f10", "KME-A", "KME-B")
	f.Add(uint8(0), mustMarshal(f, &peerpb.CompareBlocksRequest{Tags: []*peerpb.BlockTag{{BlockId: "b1", Tag: []byte("tag")}}}))
	f.Add(uint8(1), mustMarshal(f, &peerpb.PushReservationsRequest{Reservations: []*peerpb.Reservation{reservationToProto(good)}}))
	f.Add(uint8(2), mustMarshal(f, &peerpb.PullReservationsRequest{KeyIds: []string{good.KeyID}}))
	f.Add(uint8(3), mustMarshal(f, &peerpb.RequestBlocksRequest{RequestId: good.KeyID, WantBytes: 4096}))
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		switch kind % 4 {
		case 0:
			var m peerpb.CompareBlocksRequest
			if proto.Unmarshal(data, &m) == nil {
				if tags, err := tagsFromProto(m.GetTags()); err == nil && checkTags(tags) != nil {
					t.Fatal("accepted tags fail their check")
				}
			}
		case 1:
			var m peerpb.PushReservationsRequest
			if proto.Unmarshal(data, &m) == nil {
				if rs, err := reservationsFromProto(m.GetReservations()); err == nil && len(rs) > 0 && checkReservations(rs) != nil {
					t.Fatal("accepted reservations fail their check")
				}
			}
		case 2:
			var m peerpb.PullReservationsRequest
			if proto.Unmarshal(data, &m) == nil {
				_ = checkKeyIDs(m.GetKeyIds(), MaxKeyIDs)
			}
		case 3:
			var m peerpb.RequestBlocksRequest
			if proto.Unmarshal(data, &m) == nil {
				_ = checkWant(m.GetRequestId(), m.GetWantBytes())
			}
		}
	})
}

// FuzzAnswers runs every answer decoder of the client on arbitrary bytes.
func FuzzAnswers(f *testing.F) {
	good := reservation("0f8c3b4e-2a1d-4c5e-9f7a-6b5c4d3e2f10", "KME-B", "KME-A")
	f.Add(uint8(0), mustMarshal(f, &peerpb.CompareBlocksResponse{Verdicts: []*peerpb.BlockVerdict{{BlockId: "b1", Verdict: peerpb.Verdict_VERDICT_MATCH}}}))
	f.Add(uint8(1), mustMarshal(f, &peerpb.PushReservationsResponse{Accepted: []string{good.KeyID}}))
	f.Add(uint8(2), mustMarshal(f, &peerpb.PullReservationsResponse{Reservations: []*peerpb.Reservation{reservationToProto(good)}}))
	f.Add(uint8(3), mustMarshal(f, &peerpb.RequestBlocksResponse{BlockIds: []string{"b1"}}))
	asked := []BlockTag{{"b1", []byte("t")}, {"b2", []byte("t")}}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		switch kind % 4 {
		case 0:
			var m peerpb.CompareBlocksResponse
			if proto.Unmarshal(data, &m) == nil {
				if vs, err := verdictsFromProto(m.GetVerdicts(), asked); err == nil && len(vs) != len(asked) {
					t.Fatalf("%d verdicts accepted for %d blocks", len(vs), len(asked))
				}
			}
		case 1:
			var m peerpb.PushReservationsResponse
			if proto.Unmarshal(data, &m) == nil {
				acc, rej, err := pushAnswerFromProto(&m, []kms.Reservation{good})
				if err == nil && len(acc)+len(rej) != 1 {
					t.Fatalf("%d answers accepted for one reservation", len(acc)+len(rej))
				}
			}
		case 2:
			var m peerpb.PullReservationsResponse
			if proto.Unmarshal(data, &m) == nil {
				rs, err := pullAnswerFromProto(m.GetReservations(), []string{good.KeyID}, "KME-B")
				if err == nil && len(rs) > 1 {
					t.Fatalf("%d reservations accepted for one key ID", len(rs))
				}
			}
		case 3:
			var m peerpb.RequestBlocksResponse
			if proto.Unmarshal(data, &m) == nil {
				_ = checkBlockIDs(m.GetBlockIds())
			}
		}
	})
}
