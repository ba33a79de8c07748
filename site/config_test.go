package site

import (
	"strings"
	"testing"
	"time"
)

// TestRaftTimingConfig: unset raft timings get the site defaults, and timings raft would refuse
// or that would let a deposed leader serve are refused with a message naming the field.
func TestRaftTimingConfig(t *testing.T) {
	base := func(r RaftConfig) Config {
		return Config{KMEID: "K", DataDir: "d", TLS: TLSConfig{CA: "a", Cert: "b", Key: "c"}, Raft: r}
	}
	c := base(RaftConfig{})
	if err := c.fill(); err != nil {
		t.Fatal(err)
	}
	if c.Raft.HeartbeatTimeout != DefaultHeartbeatTimeout || c.Raft.ElectionTimeout != DefaultElectionTimeout ||
		c.Raft.LeaderLeaseTimeout != DefaultLeaderLeaseTimeout {
		t.Fatalf("defaults: %+v", c.Raft)
	}
	c = base(RaftConfig{HeartbeatTimeout: 2 * time.Second, LeaderLeaseTimeout: time.Second})
	if err := c.fill(); err != nil || c.Raft.HeartbeatTimeout != 2*time.Second || c.Raft.ElectionTimeout != DefaultElectionTimeout {
		t.Fatalf("explicit timings: %v, %+v", err, c.Raft)
	}
	for _, tc := range []struct {
		r    RaftConfig
		want string
	}{
		{RaftConfig{HeartbeatTimeout: 10 * time.Millisecond}, "raft.heartbeat_timeout 10ms: must be at least 50ms"},
		{RaftConfig{ElectionTimeout: -time.Second}, "raft.election_timeout -1s: must be at least 50ms"},
		{RaftConfig{HeartbeatTimeout: time.Second, LeaderLeaseTimeout: 2 * time.Second}, "leader_lease_timeout"},
		{RaftConfig{LeaderLeaseTimeout: time.Second}, "leader_lease_timeout"},
	} {
		c := base(tc.r)
		if err := c.fill(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: fill: %v, want an error about %q", tc.r, err, tc.want)
		}
	}
}
