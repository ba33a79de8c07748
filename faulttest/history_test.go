package faulttest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/qkms/qkms/api/etsi014"
)

// Outcome codes besides HTTP status codes.
const (
	outUnknown = -1 // timeout or connection lost after sending: the call may or may not have taken effect
	outRefused = -2 // the request never reached a KME (connection refused): no effect
)

// opInput is one ETSI 014 call as the model sees it, for one key ID.
type opInput struct {
	Issue bool   // enc_keys (true) or dec_keys
	Key   string // key ID
	SAE   string // enc_keys: the master; dec_keys: the caller
	Slave string // enc_keys: the named slave
	Node  string // the node the call went to
	Token string // dec_keys: the Idempotency-Key sent, or ""
}

// opOutput is the answer: an HTTP status (200, 400, ...) or outUnknown, and the key's bytes as
// a hash (the history is saved to disk; key bytes never are).
type opOutput struct {
	Code  int
	Bytes string
}

// keyState is the model of one key ID: ETSI GS QKD 014 clause 5 with qkms's rules — issued
// at most once to its master, fetched at most once by its named slave, with the issued bytes;
// a dec_keys that repeats the Idempotency-Key of the fetch that took the key may get it again.
type keyState struct {
	Issued  bool
	Bytes   string
	Slave   string
	Fetched bool
	Token   string // the Idempotency-Key of the fetch that took the key
}

func (s keyState) fetchable(caller string) bool { return s.Issued && !s.Fetched && s.Slave == caller }

// replayable says whether a dec_keys by caller with token repeats the fetch that took the key.
func (s keyState) replayable(caller, token string) bool {
	return s.Fetched && token != "" && s.Token == token && s.Slave == caller
}

// keyModel partitions the history by key ID; within a key it is nondeterministic only for calls
// with unknown outcome, which may or may not have taken effect.
var keyModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(opInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{keyState{}} },
	Step: func(state, input, output interface{}) []interface{} {
		s, in, out := state.(keyState), input.(opInput), output.(opOutput)
		if in.Issue {
			// Only answered enc_keys calls name their key IDs; the rest are not in the history.
			if s.Issued || out.Code != http.StatusOK {
				return nil
			}
			return []interface{}{keyState{Issued: true, Bytes: out.Bytes, Slave: in.Slave}}
		}
		fetched := s
		fetched.Fetched, fetched.Token = true, in.Token
		switch out.Code {
		case http.StatusOK:
			if s.fetchable(in.SAE) && out.Bytes == s.Bytes {
				return []interface{}{fetched}
			}
			if s.replayable(in.SAE, in.Token) && out.Bytes == s.Bytes {
				return []interface{}{s}
			}
		case http.StatusBadRequest: // not found: never issued, or already fetched
			if !s.Issued || s.Fetched {
				return []interface{}{s}
			}
		case http.StatusUnauthorized: // issued for another slave
			if s.Issued && s.Slave != in.SAE {
				return []interface{}{s}
			}
		case http.StatusServiceUnavailable, outRefused:
			// 503 tells the SAE to retry later: the call must have had no effect.
			return []interface{}{s}
		case outUnknown:
			if s.fetchable(in.SAE) {
				return []interface{}{s, fetched}
			}
			return []interface{}{s}
		}
		return nil
	},
	Equal: func(a, b interface{}) bool { return a.(keyState) == b.(keyState) },
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(opInput), output.(opOutput)
		res := fmt.Sprint(out.Code)
		switch out.Code {
		case outUnknown:
			res = "unknown"
		case outRefused:
			res = "refused"
		case http.StatusOK:
			res = "ok " + out.Bytes
		}
		if in.Issue {
			return fmt.Sprintf("enc_keys %s->%s @%s: %s", in.SAE, in.Slave, in.Node, res)
		}
		if in.Token != "" {
			return fmt.Sprintf("dec_keys by %s @%s (Idempotency-Key %s): %s", in.SAE, in.Node, in.Token, res)
		}
		return fmt.Sprintf("dec_keys by %s @%s: %s", in.SAE, in.Node, res)
	},
	DescribeState: func(state interface{}) string {
		s := state.(keyState)
		switch {
		case !s.Issued:
			return "not issued"
		case s.Fetched:
			return "fetched by " + s.Slave
		}
		return "issued for " + s.Slave + " " + s.Bytes
	},
}

// digest names key bytes in the history without revealing them.
func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}

// outcome classifies a client error: an API answer has its status; a connection that was
// refused never reached a KME; anything else (timeout, reset, EOF) leaves the outcome unknown.
func outcome(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var ae *etsi014.APIError
	if errors.As(err, &ae) {
		return ae.StatusCode
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return outRefused
	}
	return outUnknown
}

// history records operations with their call and return times.
type history struct {
	mu       sync.Mutex
	start    time.Time
	ops      []porcupine.Operation
	encFail  map[int]int // enc_keys calls with no key IDs, by outcome
	issued   map[string]string
	dupBytes []string // key IDs whose bytes another key ID had
}

func newHistory() *history {
	return &history{start: time.Now(), encFail: map[int]int{}, issued: map[string]string{}}
}

func (h *history) now() int64 { return time.Since(h.start).Nanoseconds() }

// issue records an enc_keys call begun at call: one operation per key ID it returned.
func (h *history) issue(client int, call int64, master, slave, node string, keys []etsi014.DeliveredKey, err error) {
	ret := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.encFail[outcome(err)]++
		return
	}
	for _, k := range keys {
		d := digest(k.Bytes)
		if other, ok := h.issued[d]; ok && other != k.ID {
			h.dupBytes = append(h.dupBytes, fmt.Sprintf("%s and %s", other, k.ID))
		}
		h.issued[d] = k.ID
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Call: call, Return: ret,
			Input:  opInput{Issue: true, Key: k.ID, SAE: master, Slave: slave, Node: node},
			Output: opOutput{Code: http.StatusOK, Bytes: d}})
	}
}

// fetch records a dec_keys call of one key ID begun at call; it returns the outcome code.
func (h *history) fetch(client int, call int64, caller, node, id, token string, keys []etsi014.DeliveredKey, err error) int {
	ret := h.now()
	out := opOutput{Code: outcome(err)}
	if err == nil {
		if len(keys) != 1 || keys[0].ID != id {
			out.Code = http.StatusInternalServerError // a malformed answer: the model refuses it
		} else {
			out.Bytes = digest(keys[0].Bytes)
		}
	}
	if out.Code == outUnknown {
		ret = math.MaxInt64 // open-ended: fixed up in check
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Call: call, Return: ret,
		Input: opInput{Key: id, SAE: caller, Node: node, Token: token}, Output: out})
	h.mu.Unlock()
	return out.Code
}

// check runs porcupine over the history. Open-ended calls end after every other event.
func (h *history) check(timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo, []porcupine.Operation) {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	var last int64
	for _, op := range ops {
		if op.Return != math.MaxInt64 {
			last = max(last, op.Return)
		}
	}
	for i := range ops {
		if ops[i].Return == math.MaxInt64 {
			ops[i].Return = last + 1
		}
	}
	res, info := porcupine.CheckOperationsVerbose(keyModel.ToModel(), ops, timeout)
	return res, info, ops
}

// counts summarises the outcomes of the recorded calls.
func (h *history) counts() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := map[string]int{}
	for _, op := range h.ops {
		in, out := op.Input.(opInput), op.Output.(opOutput)
		kind := "dec"
		if in.Issue {
			kind = "enc"
		}
		c[fmt.Sprintf("%s %d", kind, out.Code)]++
	}
	for code, n := range h.encFail {
		c[fmt.Sprintf("enc %d", code)] += n
	}
	var parts []string
	for k, n := range c {
		parts = append(parts, fmt.Sprintf("%s:%d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// trace lists the recorded operations on one key ID, in call order.
func (h *history) trace(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lines []string
	for _, op := range h.ops {
		if op.Input.(opInput).Key != id {
			continue
		}
		ret := "open"
		if op.Return != math.MaxInt64 {
			ret = time.Duration(op.Return).String()
		}
		lines = append(lines, fmt.Sprintf("  [%v, %s] client %d %s", time.Duration(op.Call), ret, op.ClientId,
			keyModel.DescribeOperation(op.Input, op.Output)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
