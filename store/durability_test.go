package store

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/qkms/qkms/kms"
)

// applyNumbered is the Update the restart and crash tests apply at index i: a reservation,
// the pool counter, and every 8th index a block of material derived from i.
func applyNumbered(db *DB, i uint64) error {
	return db.Update(i, func(tx kms.Tx) error {
		if err := tx.PutReservation(reservation(fmt.Sprintf("k-%d", i), t0, kms.KeyIssued)); err != nil {
			return err
		}
		if err := tx.PutPool(&kms.Pool{Peer: peerB, NextSeq: i}); err != nil {
			return err
		}
		if i%8 == 0 {
			blob, err := db.Seal(peerB, fmt.Sprintf("b-%d", i), numberedMaterial(i))
			if err != nil {
				return err
			}
			return tx.PutMaterial(peerB, fmt.Sprintf("b-%d", i), blob)
		}
		return nil
	})
}

func numberedMaterial(i uint64) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("%08d", i)), 2048) // 16 KB
}

// checkNumbered verifies the store holds exactly the Updates 1..applied of applyNumbered.
func checkNumbered(t *testing.T, db *DB) uint64 {
	t.Helper()
	applied, err := db.AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	mustView(t, db, func(tx kms.Tx) error {
		p, err := tx.Pool(peerB)
		if err != nil {
			t.Fatal(err)
		}
		if applied > 0 && (p == nil || p.NextSeq != applied) {
			t.Fatalf("applied index %d but pool says %+v", applied, p)
		}
		n := 0
		if err := tx.Reservations(func(*kms.Reservation) bool { n++; return true }); err != nil {
			t.Fatal(err)
		}
		if uint64(n) != applied {
			t.Fatalf("applied index %d but %d reservations", applied, n)
		}
		for i := uint64(1); i <= applied+1; i++ {
			r, err := tx.Reservation(fmt.Sprintf("k-%d", i))
			if err != nil || (r != nil) != (i <= applied) {
				t.Fatalf("applied %d: reservation k-%d present=%v (err %v)", applied, i, r != nil, err)
			}
			if i%8 == 0 {
				got, err := tx.ReadMaterial(peerB, fmt.Sprintf("b-%d", i), 0, 16<<10)
				if i <= applied && (err != nil || !bytes.Equal(got, numberedMaterial(i))) {
					t.Fatalf("applied %d: material b-%d: %v", applied, i, err)
				}
				if i > applied && !errors.Is(err, ErrNoMaterial) {
					t.Fatalf("applied %d: material b-%d of an unapplied index: %v", applied, i, err)
				}
			}
		}
		return nil
	})
	return applied
}

func TestRestartRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	key := randomBytes(t, MasterKeySize)
	db, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		if err := applyNumbered(db, i); err != nil {
			t.Fatal(err)
		}
	}
	mustUpdate(t, db, 41, func(tx kms.Tx) error { return tx.EraseMaterial(peerB, "b-8", 100, 50) })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(42, func(kms.Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Update after Close: %v", err)
	}
	db, err = Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if idx, _ := db.AppliedIndex(); idx != 41 {
		t.Fatalf("applied index after restart = %d, want 41", idx)
	}
	mustView(t, db, func(tx kms.Tx) error {
		if _, err := tx.ReadMaterial(peerB, "b-8", 120, 1); !errors.Is(err, ErrErased) {
			t.Errorf("erasure lost across restart: %v", err)
		}
		got, err := tx.ReadMaterial(peerB, "b-8", 150, 10)
		if err != nil || !bytes.Equal(got, numberedMaterial(8)[150:160]) {
			t.Errorf("bytes after the erased range: %v", err)
		}
		return nil
	})
	mustUpdate(t, db, 42, func(tx kms.Tx) error { return tx.EraseMaterial(peerB, "b-8", 0, 16<<10) })
	for i := uint64(43); i <= 48; i++ {
		if err := applyNumbered(db, i); err != nil {
			t.Fatal(err)
		}
	}
}

const crashChildEnv = "QKMS_STORE_CRASH_CHILD"

// TestCrashRecovery runs Updates in a child process, kills it with SIGKILL while it works, and
// checks after each kill that the file opens and holds exactly the Updates up to AppliedIndex,
// including every one the child saw acknowledged.
func TestCrashRecovery(t *testing.T) {
	if spec := os.Getenv(crashChildEnv); spec != "" {
		crashChild(spec)
		return
	}
	rounds, acksPerRound := 3, 60
	if testing.Short() {
		rounds = 1
	}
	path := filepath.Join(t.TempDir(), "node.db")
	key := randomBytes(t, MasterKeySize)
	var lastAck uint64
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path+","+hex.EncodeToString(key))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		acks := 0
		for acks < acksPerRound && sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "ACK "); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				lastAck = n
				acks++
			}
		}
		if acks < acksPerRound {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child stopped after %d acks", round, acks)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()

		db, err := Open(path, key)
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		applied := checkNumbered(t, db)
		if applied < lastAck {
			t.Fatalf("round %d: acknowledged index %d lost (applied %d)", round, lastAck, applied)
		}
		t.Logf("round %d: last ack %d, applied %d", round, lastAck, applied)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// crashChild applies numbered Updates from AppliedIndex+1 on, acknowledging each on stdout,
// until it is killed.
func crashChild(spec string) {
	path, hexKey, _ := strings.Cut(spec, ",")
	key, err := hex.DecodeString(hexKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	db, err := Open(path, key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	i, err := db.AppliedIndex()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	for {
		i++
		if err := applyNumbered(db, i); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		fmt.Printf("ACK %d\n", i)
	}
}
