package faulttest

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/kms"
)

// callTimeout bounds one ETSI call; a call cut by it has an unknown outcome.
const callTimeout = 4 * time.Second

// issuedKey is an acknowledged key a slave may fetch.
type issuedKey struct {
	dir     int // the issuing site
	id      string
	master  string
	slave   string
	fetched bool // a dec_keys returned it (only steers the workload; the model decides)
	// unsureAt is when the slave's first dec_keys of unknown outcome was sent (zero: none).
	// Its retries carry the same Idempotency-Key, so the key is lost to the slave only if
	// they come after the site dropped that call's answer (kms.DefaultRequestTTL).
	unsureAt time.Time
}

// workload is the SAE clients: at each site they issue keys for SAEs at the other site, and
// they fetch, at the other site, the keys issued for them — sometimes twice, sometimes as the
// wrong slave, sometimes keys that were never issued.
type workload struct {
	nw   *network
	h    *history
	mu   sync.Mutex
	keys []*issuedKey
}

func (w *workload) add(k *issuedKey) {
	w.mu.Lock()
	w.keys = append(w.keys, k)
	w.mu.Unlock()
}

// pick returns a key of site dir, preferring ones not fetched yet.
func (w *workload) pick(rng *rand.Rand, dir int) *issuedKey {
	w.mu.Lock()
	defer w.mu.Unlock()
	var open, any []*issuedKey
	for _, k := range w.keys[max(0, len(w.keys)-400):] {
		if k.dir != dir {
			continue
		}
		any = append(any, k)
		if !k.fetched {
			open = append(open, k)
		}
	}
	if len(open) > 0 && rng.IntN(10) < 8 {
		return open[rng.IntN(len(open))]
	}
	if len(any) == 0 {
		return nil
	}
	return any[rng.IntN(len(any))]
}

// encKeys issues number keys at node n and records the call; it returns the keys on success.
// Untracked keys are recorded in the history but not fetched by the workload or the drain.
func (w *workload) encKeys(client int, n *node, master, slave string, number int, track bool) ([]etsi014.DeliveredKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	call := w.h.now()
	keys, err := n.clients[master].GetKey(ctx, slave, etsi014.KeyRequest{Number: number})
	w.h.issue(client, call, master, slave, n.id, keys, err)
	if err == nil && track {
		for _, k := range keys {
			w.add(&issuedKey{dir: n.site, id: k.ID, master: master, slave: slave})
		}
	}
	return keys, err
}

// decKey fetches one key ID at node n as caller, with the Idempotency-Key token (or none),
// and records the call.
func (w *workload) decKey(client int, n *node, caller, master, id, token string) int {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	call := w.h.now()
	keys, err := n.clients[caller].GetKeyWithIDsIdempotent(ctx, master, []string{id}, token)
	return w.h.fetch(client, call, caller, n.id, id, token, keys, err)
}

// fetchToken is the Idempotency-Key with which a slave fetches k as long as it has not seen
// the key: every attempt, the retries after an unknown outcome included, carries the same one,
// as an encryptor would. A fetch after the key was received sends none, so the model still
// sees that a second fetch fails.
func fetchToken(k *issuedKey) string { return "fetch-" + k.id }

// run drives client number c until ctx ends; clients alternate the issuing site.
func (w *workload) run(ctx context.Context, c int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(c)))
	dir := c % 2
	for ctx.Err() == nil {
		at := w.nw.nodes[dir][rng.IntN(3)]
		other := w.nw.nodes[1-dir][rng.IntN(3)]
		switch r := rng.IntN(100); {
		case r < 50:
			master, slave := saes[dir][rng.IntN(2)], saes[1-dir][rng.IntN(2)]
			w.encKeys(c, at, master, slave, 1+rng.IntN(3), true)
		case r < 92:
			k := w.pick(rng, dir)
			if k == nil {
				continue
			}
			caller := k.slave
			if rng.IntN(10) == 0 {
				caller = saes[1-dir][0]
				if caller == k.slave {
					caller = saes[1-dir][1]
				}
			}
			token := ""
			w.mu.Lock()
			if caller == k.slave && !k.fetched {
				token = fetchToken(k)
			}
			w.mu.Unlock()
			sent := time.Now()
			code := w.decKey(c, other, caller, k.master, k.id, token)
			w.mu.Lock()
			if caller == k.slave {
				k.fetched = k.fetched || code == http.StatusOK
				if code == outUnknown && k.unsureAt.IsZero() {
					k.unsureAt = sent
				}
			}
			w.mu.Unlock()
		default:
			// A key ID never issued must never be delivered.
			w.decKey(c, other, saes[1-dir][rng.IntN(2)], saes[dir][0], uuid.NewString(), "")
		}
	}
}

// drain fetches, after healing, every acknowledged key not yet delivered, retrying while the
// answer is 503 or unknown. It returns the keys that could not be fetched and how many of them
// had a fetch of unknown outcome longer than kms.DefaultRequestTTL before (those may have been
// delivered to a slave that did not hear the answer, and the site no longer keeps it for a
// retry). Keys left when the deadline passes are counted as unchecked.
func (w *workload) drain(client int, rng *rand.Rand, deadline time.Time) (lost []string, unsure, unchecked int) {
	w.mu.Lock()
	var todo []*issuedKey
	for _, k := range w.keys {
		if !k.fetched {
			todo = append(todo, k)
		}
	}
	w.mu.Unlock()
	for _, k := range todo {
		if time.Now().After(deadline) {
			unchecked++
			continue
		}
		code := 0
		for time.Now().Before(deadline) {
			n := w.nw.nodes[1-k.dir][rng.IntN(3)]
			code = w.decKey(client, n, k.slave, k.master, k.id, fetchToken(k))
			if code != http.StatusServiceUnavailable && code != outUnknown && code != outRefused {
				break
			}
		}
		if code == http.StatusOK {
			k.fetched = true
			continue
		}
		lost = append(lost, k.id)
		if !k.unsureAt.IsZero() && time.Since(k.unsureAt) > kms.DefaultRequestTTL {
			unsure++
		}
	}
	return lost, unsure, unchecked
}
