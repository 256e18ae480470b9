#!/usr/bin/env bash
# Runs every test binary, then (unless UNIT_ONLY is set) the golden and CLI
# scripts; the last line is the total:
# "N passed, M failed, K skipped" (each test binary and script counts as one).
set -u
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
pass=0; fail=0; skip=0; failed_names=()
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    echo "== $name"
    "$t"; rc=$?
    case $rc in
        0) pass=$((pass+1));;
        77) skip=$((skip+1));;
        *) fail=$((fail+1)); failed_names+=("$name");;
    esac
done
for t in tests/golden.sh tests/cli.sh; do
    [ -x "$t" ] && [ -z "${UNIT_ONLY:-}" ] || continue
    name=$(basename "$t")
    echo "== $name"
    BUILD="$BUILD" "$t"; rc=$?
    case $rc in
        0) pass=$((pass+1));;
        77) skip=$((skip+1));;
        *) fail=$((fail+1)); failed_names+=("$name");;
    esac
done
[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
