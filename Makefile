# qkms build and test targets. `make test` is what CI runs (README's test command).
GO ?= go

.PHONY: test build demo fuzz-short bench
test:
	$(GO) test -count=1 -timeout 15m ./...

build:
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...

demo:
	$(GO) run ./cmd/qkms demo --dir /tmp/qkms-demo

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./qkdsim/...
