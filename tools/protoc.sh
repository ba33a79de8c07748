#!/bin/sh
# Regenerates the Go code of every .proto under api/ (one protoc run per Go package), with
# Debian's protoc and the pinned Go plugins. Generated code is committed; run this after
# editing a .proto (the Makefile target `proto` calls it) and commit the result.
#
# Plugins (pinned so the generated headers do not churn between machines):
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
set -eu

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=1.6.2

cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
export PATH

for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "protoc.sh: $tool not found; install protobuf-compiler (apt) and the plugins listed at the top of $0" >&2
		exit 1
	fi
done
case "$(protoc-gen-go --version)" in
*" $PROTOC_GEN_GO_VERSION") ;;
*) echo "protoc.sh: protoc-gen-go is $(protoc-gen-go --version), want $PROTOC_GEN_GO_VERSION" >&2; exit 1 ;;
esac
case "$(protoc-gen-go-grpc --version)" in
*" $PROTOC_GEN_GO_GRPC_VERSION") ;;
*) echo "protoc.sh: protoc-gen-go-grpc is $(protoc-gen-go-grpc --version), want $PROTOC_GEN_GO_GRPC_VERSION" >&2; exit 1 ;;
esac

# Well-known types (google/protobuf/timestamp.proto) ship with Debian's protobuf-compiler.
include=""
if [ -d /usr/include/google/protobuf ]; then
	include="-I /usr/include"
fi

for dir in $(find api -name '*.proto' -exec dirname {} \; | sort -u); do
	# shellcheck disable=SC2086 # $include is deliberately split
	protoc -I . $include \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		"$dir"/*.proto
	echo "protoc.sh: generated $dir"
done
