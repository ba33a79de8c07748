package site

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/kms"
)

// Prometheus metrics of one node, served as /metrics on the metrics listener
// (Listen.Metrics). The listener speaks plain HTTP, as Prometheus scrapers do by default:
// bind it to loopback or a management network. Nothing secret is exported: labels hold
// SAE IDs, KME IDs, provenances, operation names and status codes, never key bytes or key
// IDs (which would also make cardinality unbounded).
//
// Counters of keys are counted by the node that proposed the command (issued and fetched at
// the node serving the SAE, expired at the leader), so a site's totals are the sum over its
// nodes. A link's key rate is rate(qkms_link_key_bytes_total[1m]) * 8 bits per second.
type metrics struct {
	reg *prometheus.Registry

	keysIssued      *prometheus.CounterVec
	keysFetched     *prometheus.CounterVec
	keysExpired     *prometheus.CounterVec
	keysRedelivered *prometheus.CounterVec

	linkBytes     *prometheus.CounterVec
	linkBlocks    *prometheus.CounterVec
	linkQBER      *prometheus.GaugeVec
	linkLastBlock *prometheus.GaugeVec

	apply    *prometheus.HistogramVec
	requests *prometheus.HistogramVec
	streams  *prometheus.CounterVec
	streamed *prometheus.CounterVec

	pushDuration *prometheus.HistogramVec
	pushed       *prometheus.CounterVec
	fetchWaits   *prometheus.CounterVec
}

// latencyBuckets span 0.25 ms to about 4 s: a delivery on one machine takes about a
// millisecond, a replicated write with fsync a few, a cross-site pull tens.
var latencyBuckets = prometheus.ExponentialBuckets(0.00025, 2, 15)

func newMetrics(n *Node) *metrics {
	pair := []string{"master_sae", "slave_sae", "provenance"}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		keysIssued: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_keys_issued_total",
			Help: "Keys issued to master SAEs at this site (Get key, StreamKeys), per SAE pair and provenance; repeated answers to retries are in qkms_keys_redelivered_total."}, pair),
		keysFetched: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_keys_fetched_total",
			Help: "Keys delivered to slave SAEs at this site (Get key with key IDs, FollowKeys), per SAE pair and provenance; repeated answers to retries are in qkms_keys_redelivered_total."}, pair),
		keysExpired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_keys_expired_total",
			Help: "Keys that expired before every slave fetched them (erased), per SAE pair and provenance."}, pair),
		keysRedelivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_keys_redelivered_total",
			Help: "Keys handed out again to a retry of the same request (an Idempotency-Key, or the node's own retry after an unknown outcome) instead of being issued or fetched anew, per operation (issue, fetch) and SAE pair."},
			[]string{"operation", "master_sae", "slave_sae"}),
		linkBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_link_key_bytes_total",
			Help: "Usable key bytes ingested from the QKD link with a peer KME; rate()*8 is the link's key rate in bit/s."}, []string{"peer"}),
		linkBlocks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_link_blocks_total",
			Help: "Key blocks ingested from the QKD link with a peer KME."}, []string{"peer"}),
		linkQBER: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "qkms_link_qber",
			Help: "Quantum bit error rate of the last block ingested from the link with a peer KME."}, []string{"peer"}),
		linkLastBlock: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "qkms_link_last_block_timestamp_seconds",
			Help: "Unix time of the last block ingested from the link with a peer KME."}, []string{"peer"}),
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "qkms_raft_apply_duration_seconds",
			Help: "Time from proposing a command to the site's replicated log until its result, per command.", Buckets: latencyBuckets}, []string{"command"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "qkms_request_duration_seconds",
			Help: "Latency of SAE requests per API (etsi014, grpc), operation and answer code.", Buckets: latencyBuckets}, []string{"api", "operation", "code"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_grpc_streams_total",
			Help: "gRPC key streams ended, per operation and status code."}, []string{"operation", "code"}),
		streamed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_grpc_streamed_keys_total",
			Help: "Keys sent on gRPC key streams, per operation."}, []string{"operation"}),
		pushDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "qkms_peer_push_duration_seconds",
			Help:    "Round trip of one push of reservations to a peer KME, its commit there included, per peer and result (ok, error); the count is the number of pushes.",
			Buckets: latencyBuckets}, []string{"peer", "result"}),
		pushed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_peer_pushed_reservations_total",
			Help: "Reservations this node pushed to a peer KME, per peer and result: accepted (stored there), rejected (refused; retried later when the peer said so), unsent (no channel or the call failed; they wait in the store for the next attempt, or for the peer to pull them)."},
			[]string{"peer", "result"}),
		fetchWaits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qkms_fetch_reservations_total",
			Help: "How fetches by slave SAEs (dec_keys, GetKeyWithIDs) at this node found the reservations of their keys, per issuing KME: present on arrival, pushed while the fetch waited, handoff (a push carried the fetch and applied it), pulled from the issuing site, not_issued (it holds none of the missing IDs), unavailable (the issuing site could not be reached, or the request's time ran out: 503), error."},
			[]string{"peer", "outcome"}),
	}
	m.reg.MustRegister(m.keysIssued, m.keysFetched, m.keysExpired, m.keysRedelivered, m.linkBytes, m.linkBlocks, m.linkQBER,
		m.linkLastBlock, m.apply, m.requests, m.streams, m.streamed, m.pushDuration, m.pushed, m.fetchWaits, stateCollector{n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeCommand records a command the node proposed, with its result and duration.
// Called by Node.propose for every command.
func (n *Node) observeCommand(c *kms.Command, res *kms.Result, err error, d time.Duration) {
	m := n.metrics
	if m == nil {
		return
	}
	m.apply.WithLabelValues(commandName(c)).Observe(d.Seconds())
	if err != nil || res == nil || res.Err != nil {
		return
	}
	switch {
	case c.Ingest != nil:
		p := c.Ingest.Peer
		m.linkBytes.WithLabelValues(p).Add(float64(c.Ingest.Bytes))
		m.linkBlocks.WithLabelValues(p).Inc()
		m.linkQBER.WithLabelValues(p).Set(c.Ingest.QBER)
		m.linkLastBlock.WithLabelValues(p).Set(float64(c.Time.UnixNano()) / 1e9)
	case res.Replayed && c.Issue != nil:
		m.keysRedelivered.WithLabelValues("issue", c.Issue.Master, c.Issue.Slaves[0]).Add(float64(len(res.Keys)))
	case res.Replayed && c.Fetch != nil:
		m.keysRedelivered.WithLabelValues("fetch", c.Fetch.Master, c.Fetch.Caller).Add(float64(len(res.Keys)))
	case c.Issue != nil:
		byProvenance(res.Keys, func(prov string, n int) {
			m.keysIssued.WithLabelValues(c.Issue.Master, c.Issue.Slaves[0], prov).Add(float64(n))
		})
	case c.Fetch != nil:
		byProvenance(res.Keys, func(prov string, n int) {
			m.keysFetched.WithLabelValues(c.Fetch.Master, c.Fetch.Caller, prov).Add(float64(n))
		})
	case c.Expire != nil && len(res.Expired) > 0:
		// Expired carries key IDs only; the reservations (kept as tombstones) name the pair.
		n.db.View(func(tx kms.Tx) error {
			for _, id := range res.Expired {
				master, slave, prov := "unknown", "unknown", "unknown"
				if r, err := tx.Reservation(id); err == nil && r != nil && len(r.Slaves) > 0 {
					master, slave, prov = r.Master, r.Slaves[0], string(r.Provenance)
				}
				m.keysExpired.WithLabelValues(master, slave, prov).Inc()
			}
			return nil
		})
	}
}

// observePush records one push call to peer: how long it took and what became of the
// reservations it carried (all unsent when err is set).
func (n *Node) observePush(peer string, sent, accepted, rejected int, d time.Duration, err error) {
	m := n.metrics
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
		m.pushed.WithLabelValues(peer, "unsent").Add(float64(sent))
	} else {
		m.pushed.WithLabelValues(peer, "accepted").Add(float64(accepted))
		m.pushed.WithLabelValues(peer, "rejected").Add(float64(rejected))
	}
	m.pushDuration.WithLabelValues(peer, result).Observe(d.Seconds())
}

// observeUnsent counts reservations that could not be pushed to peer without a call.
func (n *Node) observeUnsent(peer string, count int) {
	if m := n.metrics; m != nil {
		m.pushed.WithLabelValues(peer, "unsent").Add(float64(count))
	}
}

// How a fetch found the reservations of its keys (ensureReservations).
const (
	fetchPresent     = "present"
	fetchPushed      = "pushed"
	fetchHandoff     = "handoff"
	fetchPulled      = "pulled"
	fetchNotIssued   = "not_issued"
	fetchUnavailable = "unavailable"
	fetchError       = "error"
)

func (n *Node) observeFetchWait(owner, outcome string) {
	if m := n.metrics; m != nil {
		m.fetchWaits.WithLabelValues(owner, outcome).Inc()
	}
}

// byProvenance calls add once per run of keys of one provenance: the keys of a request
// usually share theirs, so a counter's labels are looked up once per request, not per key.
func byProvenance(keys []kms.Key, add func(prov string, n int)) {
	for i := 0; i < len(keys); {
		prov, j := provenanceOf(keys[i]), i+1
		for j < len(keys) && provenanceOf(keys[j]) == prov {
			j++
		}
		add(string(prov), j-i)
		i = j
	}
}

func commandName(c *kms.Command) string {
	switch {
	case c.Ingest != nil:
		return "ingest"
	case c.Verify != nil:
		return "verify"
	case c.Issue != nil:
		return "issue"
	case c.Fetch != nil:
		return "fetch"
	case c.PeerReserve != nil:
		return "peer_reserve"
	case c.MarkPushed != nil:
		return "mark_pushed"
	case c.Expire != nil:
		return "expire"
	case c.Transfer != nil:
		return "transfer"
	}
	return "other"
}

// stateCollector reads pool fill and raft state at scrape time from the node's local store
// and raft, so a scrape costs no replicated read.
type stateCollector struct{ n *Node }

var (
	poolDesc = map[string]*prometheus.Desc{
		"available": prometheus.NewDesc("qkms_pool_available_bytes", "Verified key bytes this site owns and may issue from, per peer KME.", []string{"peer"}, nil),
		"pending":   prometheus.NewDesc("qkms_pool_pending_bytes", "Key bytes awaiting verification with the peer KME.", []string{"peer"}, nil),
		"reserved":  prometheus.NewDesc("qkms_pool_reserved_bytes", "Key bytes reserved for keys not yet fetched at this site, per peer KME.", []string{"peer"}, nil),
	}
	raftStateDesc   = prometheus.NewDesc("qkms_raft_state", "1 for this node's current raft state (Leader, Follower, Candidate, Shutdown).", []string{"state"}, nil)
	raftTermDesc    = prometheus.NewDesc("qkms_raft_term", "Current raft term.", nil, nil)
	raftCommitDesc  = prometheus.NewDesc("qkms_raft_commit_index", "Raft commit index.", nil, nil)
	raftAppliedDesc = prometheus.NewDesc("qkms_raft_applied_index", "Highest log index applied to this node's state store.", nil, nil)
	unpushedDesc    = prometheus.NewDesc("qkms_unpushed_reservations", "Reservations this site issued that the peer KME has not acknowledged yet: a few in normal operation, growing while the peer channel is down (the peer's dec_keys for them answer 503 until it comes back).", nil, nil)
	envelopesDesc   = prometheus.NewDesc("qkms_peer_envelopes_total", "Envelopes this node made for peer-channel calls and answers, per kind: mac (pushes and pulls under a PQ epoch's MAC key) or signed (ML-DSA-65: every other call, and pushes and pulls while no epoch is old enough or the peer refused the MAC).", []string{"kind"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range poolDesc {
		ch <- d
	}
	ch <- raftStateDesc
	ch <- raftTermDesc
	ch <- raftCommitDesc
	ch <- raftAppliedDesc
	ch <- unpushedDesc
	ch <- envelopesDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	n.db.View(func(tx kms.Tx) error {
		return tx.Pools(func(p *kms.Pool) bool {
			ch <- prometheus.MustNewConstMetric(poolDesc["available"], prometheus.GaugeValue, float64(p.Available), p.Peer)
			ch <- prometheus.MustNewConstMetric(poolDesc["pending"], prometheus.GaugeValue, float64(p.Pending), p.Peer)
			ch <- prometheus.MustNewConstMetric(poolDesc["reserved"], prometheus.GaugeValue, float64(p.Reserved), p.Peer)
			return true
		})
	})
	if count, err := n.db.UnpushedCount(); err == nil {
		ch <- prometheus.MustNewConstMetric(unpushedDesc, prometheus.GaugeValue, float64(count))
	}
	if n.pq != nil {
		mac, signed := n.pq.auth.Sealed()
		ch <- prometheus.MustNewConstMetric(envelopesDesc, prometheus.CounterValue, float64(mac), "mac")
		ch <- prometheus.MustNewConstMetric(envelopesDesc, prometheus.CounterValue, float64(signed), "signed")
	}
	if n.rn == nil {
		return
	}
	stats := n.rn.Stats()
	for _, st := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if stats["state"] == st {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(raftStateDesc, prometheus.GaugeValue, v, st)
	}
	for desc, key := range map[*prometheus.Desc]string{raftTermDesc: "term", raftCommitDesc: "commit_index"} {
		if v, err := strconv.ParseUint(stats[key], 10, 64); err == nil {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(v))
		}
	}
	ch <- prometheus.MustNewConstMetric(raftAppliedDesc, prometheus.GaugeValue, float64(n.rn.AppliedIndex()))
}

// instrumentETSI wraps the ETSI 014 handler to record request latency per operation (the
// last path segment: status, enc_keys, dec_keys) and HTTP status code.
func (m *metrics) instrumentETSI(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		op := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		switch op {
		case "status", "enc_keys", "dec_keys":
		default:
			op = "other" // bounded label values whatever the path
		}
		m.requests.WithLabelValues("etsi014", op, strconv.Itoa(rec.code)).Observe(time.Since(start).Seconds())
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// grpcOperation is the method name of a full gRPC method ("/qkms.v1.KeyDelivery/GetKey").
func grpcOperation(full string) string { return full[strings.LastIndexByte(full, '/')+1:] }

func (m *metrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.requests.WithLabelValues("grpc", grpcOperation(info.FullMethod), status.Code(err).String()).Observe(time.Since(start).Seconds())
	return resp, err
}

func (m *metrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	op := grpcOperation(info.FullMethod)
	err := handler(srv, &countingStream{ServerStream: ss, sent: m.streamed.WithLabelValues(op)})
	m.streams.WithLabelValues(op, status.Code(err).String()).Inc()
	return err
}

// countingStream counts the messages a server stream sends (one key each on KeyDelivery).
type countingStream struct {
	grpc.ServerStream
	sent prometheus.Counter
}

func (s *countingStream) SendMsg(msg any) error {
	err := s.ServerStream.SendMsg(msg)
	if err == nil {
		s.sent.Inc()
	}
	return err
}

// listenMetrics starts the plain-HTTP metrics listener (Listen.Metrics) serving /metrics.
func (n *Node) listenMetrics() error {
	a := n.cfg.Listen.Metrics
	if a == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return fmt.Errorf("site: metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	n.metricsLn = ln
	n.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go n.metricsSrv.Serve(ln)
	return nil
}

func (n *Node) closeMetrics() {
	if n.metricsSrv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := n.metricsSrv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.metricsSrv.Close()
	}
}

// MetricsAddr is the bound address of the metrics listener ("" if none).
func (n *Node) MetricsAddr() string { return addrOf(n.metricsLn) }
