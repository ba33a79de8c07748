#!/bin/sh
# Smoke test of the container deployment (deploy/README.md), run by hand, not by `go test`:
#   1. build the images and generate the configs (make images deploy-config),
#   2. docker-compose up, wait until KME-A holds key for SAE-B1,
#   3. enc_keys at KME-A as SAE-A1 for SAE-B1, dec_keys of the same key ID at KME-B as SAE-B1;
#      the key bytes must match,
#   4. docker kill KME-A's raft leader; enc_keys must work through another node of KME-A
#      (and dec_keys at KME-B must return that key too),
#   5. docker-compose down -v (also on failure, unless KEEP=1).
# Every request goes to 127.0.0.1 (ports published on loopback only).
#
# Environment: SKIP_BUILD=1 skips step 1; KEEP=1 leaves the deployment running;
# READY_TIMEOUT (s, default 180) bounds the wait for key; COMPOSE (default docker-compose).
set -eu

cd "$(dirname "$0")/.."
COMPOSE=${COMPOSE:-docker-compose}
DC="$COMPOSE -f deploy/compose.yaml"
GEN=deploy/generated
READY_TIMEOUT=${READY_TIMEOUT:-180}

A_PORTS="18441 18442 18443" # ETSI 014 of a1 a2 a3 on the host
B_PORTS="18451 18452 18453" # ETSI 014 of b1 b2 b3

log() { printf '%s smoke: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
	log "FAIL: $*"
	exit 1
}

cleanup() {
	rc=$?
	if [ "${KEEP:-0}" = 1 ]; then
		log "KEEP=1: deployment left running; stop it with: $DC down -v"
	else
		[ $rc -eq 0 ] || $DC logs --tail 20 >&2 2>&1 || true
		$DC down -v >/dev/null 2>&1 || true
	fi
	exit $rc
}

# sae NAME PORT PATH [curl args]: an ETSI 014 call as SAE NAME to 127.0.0.1:PORT.
sae() {
	name=$1 port=$2 path=$3
	shift 3
	curl -sS --fail-with-body --max-time 10 --cacert $GEN/pki/ca.pem \
		--cert $GEN/pki/$name.pem --key $GEN/pki/$name-key.pem \
		"https://127.0.0.1:$port/api/v1/keys/$path" "$@"
}

# enc PORT: one 256-bit key for SAE-B1, as SAE-A1; prints the JSON key container.
enc() {
	sae SAE-A1 "$1" SAE-B1/enc_keys -H 'Content-Type: application/json' -d '{"number":1,"size":256}'
}

# dec PORT KEY_ID: that key, as SAE-B1; prints the JSON key container.
dec() {
	sae SAE-B1 "$1" SAE-A1/dec_keys -H 'Content-Type: application/json' -d "{\"key_IDs\":[{\"key_ID\":\"$2\"}]}"
}

# check_pair ENC_JSON B_PORT: dec_keys of the issued key at KME-B returns the same bytes. KME-B
# may still be fetching the block from its device (or waiting for the reservation to reach it),
# so a refused dec_keys is retried for up to 30 s; a key is handed out once, so a successful
# answer is compared, never fetched again.
check_pair() {
	id=$(printf '%s' "$1" | jq -r '.keys[0].key_ID')
	want=$(printf '%s' "$1" | jq -r '.keys[0].key')
	[ -n "$id" ] && [ "$id" != null ] || fail "enc_keys returned no key: $1"
	i=0
	until got=$(dec "$2" "$id" 2>&1); do
		i=$((i + 1))
		[ $i -lt 30 ] || fail "dec_keys of $id at 127.0.0.1:$2 kept failing: $got"
		sleep 1
	done
	[ "$(printf '%s' "$got" | jq -r '.keys[0].key')" = "$want" ] || fail "key $id differs between KME-A and KME-B"
	log "key $id: identical at KME-A (enc_keys) and KME-B (dec_keys at 127.0.0.1:$2)"
}

# leader SITE_PREFIX: the container of the site's current raft leader, from the nodes' logs
# (the newest "entering leader state" line; terms only grow, so the newest one is current).
leader() {
	for n in 1 2 3; do
		c=qkms-$1$n
		t=$(docker logs $c 2>&1 | grep 'entering leader state' | tail -n 1 | sed -n 's/^time=\([^ ]*\).*/\1/p')
		[ -n "$t" ] && printf '%s %s\n' "$t" $c
	done | sort | tail -n 1 | cut -d' ' -f2
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	log "building images and configs"
	make images deploy-config >&2
fi
trap cleanup EXIT INT TERM
$DC down -v >/dev/null 2>&1 || true
log "starting the deployment"
$DC up -d >&2

log "waiting for KME-A to hold key for SAE-B1 (up to ${READY_TIMEOUT}s)"
deadline=$(($(date +%s) + READY_TIMEOUT))
while :; do
	n=$(sae SAE-A1 18441 SAE-B1/status 2>/dev/null | jq -r '.stored_key_count // 0' 2>/dev/null || echo 0)
	[ "${n:-0}" -gt 0 ] && break
	[ "$(date +%s)" -lt $deadline ] || fail "no key at KME-A after ${READY_TIMEOUT}s"
	sleep 2
done
log "KME-A reports $n stored keys for SAE-B1"

k=$(enc 18441) || fail "enc_keys at a1: $k"
check_pair "$k" 18451

victim=$(leader a)
[ -n "$victim" ] || fail "no leader of KME-A found in the logs"
log "killing KME-A's leader $victim"
start=$(date +%s)
docker kill "$victim" >/dev/null

# enc_keys through the other nodes of KME-A until one answers (a new leader is elected).
deadline=$((start + 60))
k=
while [ -z "$k" ]; do
	for p in $A_PORTS; do
		[ "qkms-a${p#1844}" = "$victim" ] && continue
		if k=$(enc "$p" 2>/dev/null); then
			log "enc_keys answered by 127.0.0.1:$p (node a${p#1844}) $(($(date +%s) - start))s after the kill"
			break
		fi
		k=
	done
	[ -n "$k" ] && break
	[ "$(date +%s)" -lt $deadline ] || fail "KME-A did not serve enc_keys within 60s of losing its leader"
	sleep 1
done
log "new leader of KME-A: $(leader a)"
check_pair "$k" "$(echo $B_PORTS | cut -d' ' -f2)"
log "PASS"
