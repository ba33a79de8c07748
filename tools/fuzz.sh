#!/usr/bin/env bash
# Runs every fuzz target of the module (issue 6: "a fuzz target for every decoder of outside
# input, a short fuzz run in CI and a long one as a make target").
#
#   tools/fuzz.sh [-t DURATION] [-p PACKAGE_REGEXP] [-l]
#
#   -t  how long to fuzz each target (go test -fuzztime: 5s, 5m, 10000x); default $FUZZTIME or 5s
#   -p  only packages whose ./path matches this extended regexp
#   -l  list the targets and exit
#
# Targets are found by their declaration (`func FuzzXxx(f *testing.F)` in a _test.go file), so a
# new one is picked up without editing this script. Each runs alone, since go test fuzzes one
# target at a time. Every target runs even after a failure; the exit status is non-zero if any
# failed, and the failing input is left where go test writes it (PKG/testdata/fuzz/FuzzXxx/),
# to be committed as a regression seed once fixed.
set -uo pipefail
cd "$(dirname "$0")/.."

fuzztime="${FUZZTIME:-5s}"
only=""
list=0
while getopts "t:p:l" opt; do
	case "$opt" in
	t) fuzztime="$OPTARG" ;;
	p) only="$OPTARG" ;;
	l) list=1 ;;
	*) echo "usage: $0 [-t DURATION] [-p PACKAGE_REGEXP] [-l]" >&2; exit 2 ;;
	esac
done

# "./pkg FuzzName" per target, skipping directories the go tool ignores (testdata, _x, .x).
targets=$(find . -name '*_test.go' -not -path '*/testdata/*' -not -path '*/.*/*' -not -path '*/_*' -print0 |
	xargs -0 grep -H -E '^func Fuzz[A-Za-z0-9_]*\(' |
	sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' |
	sort -u)
if [ -n "$only" ]; then
	targets=$(echo "$targets" | awk -v re="$only" '$1 ~ re')
fi
if [ -z "$targets" ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
if [ "$list" = 1 ]; then
	echo "$targets"
	exit 0
fi

count=$(echo "$targets" | wc -l)
echo "fuzz: $count targets, $fuzztime each"
# fuzz_once runs one target. A real failure writes its input under testdata/fuzz/; on a loaded
# machine go's fuzzing engine sometimes ends a run that found nothing with "context deadline
# exceeded" instead (its workers miss the -fuzztime deadline). That outcome, and only that, is
# retried, twice at most.
fuzz_once() {
	local pkg=$1 name=$2 out before after
	for attempt in 1 2 3; do
		before=$(ls "$pkg/testdata/fuzz/$name" 2>/dev/null | wc -l)
		# -fuzztime bounds the run; -timeout 0 keeps go test from killing a long (-t 5m) run.
		out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -timeout 0 "$pkg" </dev/null 2>&1)
		local rc=$?
		echo "$out"
		[ $rc = 0 ] && return 0
		after=$(ls "$pkg/testdata/fuzz/$name" 2>/dev/null | wc -l)
		if [ "$after" != "$before" ] || ! grep -q 'context deadline exceeded' <<<"$out"; then
			return 1
		fi
		echo "fuzz: $pkg $name: the engine missed its deadline without a failing input (attempt $attempt)"
	done
	return 1
}

failed=()
while read -r pkg name; do
	echo "=== $pkg $name"
	if ! fuzz_once "$pkg" "$name"; then
		failed+=("$pkg $name")
	fi
done <<<"$targets"

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $count targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	echo "fuzz: failing inputs are under each package's testdata/fuzz/; rerun one with go test -run 'FuzzXxx/NAME' ./pkg" >&2
	exit 1
fi
echo "fuzz: all $count targets passed"
