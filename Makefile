# qkms build and test targets. CI runs README's test command through .ci/run, not make.
GO ?= go

.PHONY: test race build demo bench proto fuzz-short fuzz-long faults-long memflat images deploy-config

test:
	$(GO) test -count=1 -timeout 30m ./...

# The race detector (needs cgo and a C compiler) over every package whose tests run in-process:
# not faulttest (its sites are processes) nor the commands. About 2.5 minutes; CI runs it.
race:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 30m $$($(GO) list ./... | grep -v -e /faulttest -e /cmd/)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

demo:
	$(GO) run ./cmd/qkms demo --dir /tmp/qkms-demo

# Go benchmarks of the simulator, the store and ingest (figures go to docs/benchmarks.md).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./qkdsim/... ./store/... ./site/...

# Regenerate protobuf code: needs Debian's protobuf-compiler and the pinned plugins
# (see tools/protoc.sh).
proto:
	sh tools/protoc.sh

# Container images FROM scratch (deploy/Dockerfile): static binaries built here are the whole
# build context, so docker pulls nothing. deploy/README.md explains the deployment.
images:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/qkms ./cmd/qkdsim
	docker build -f deploy/Dockerfile --target qkms -t qkms:dev bin
	docker build -f deploy/Dockerfile --target qkdsim -t qkdsim:dev bin

# Certificates, master keys and node configs of deploy/compose.yaml, into deploy/generated.
deploy-config:
	$(GO) run ./cmd/qkms deploy-config --dir deploy/generated --nodes 3

# Fuzz every Fuzz target: a short pass (CI runs it) and a long one.
fuzz-short:
	bash tools/fuzz.sh -t 5s

fuzz-long:
	bash tools/fuzz.sh -t 5m

# The fault harness (faulttest/) for 50 seeded runs: kills, partitions, pauses, snapshot
# installs and peer-channel cuts under load, checked with porcupine. Several hours.
faults-long:
	QKMS_FAULT_RUNS=50 QKMS_FAULT_SNAPSHOT_WAIT=300 $(GO) test -count=1 -timeout 0 -run TestFaults -v ./faulttest/

# Resident memory of a site at 10^4 and 10^7 stored keys (docs/benchmarks.md).
memflat:
	QKMS_MEMFLAT=1 $(GO) test -count=1 -run TestMemoryFlat -v ./site/
