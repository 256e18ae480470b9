#!/usr/bin/env bash
# The test command of README.md: builds lipar, runs every unit, golden and CLI
# test, then rebuilds with AddressSanitizer + UBSan and runs the unit tests
# again. The last line is the total "N passed, M failed, K skipped".
set -u
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
make -j"$JOBS" all >/dev/null || { echo "build failed"; make all 2>&1 | tail -n 30; exit 1; }
BUILD=build tests/run.sh | tee build/test-normal.log
rc1=${PIPESTATUS[0]}
make SAN=1 -j"$JOBS" all >/dev/null || { echo "sanitizer build failed"; exit 1; }
echo "== unit tests under -fsanitize=address,undefined"
BUILD=build-san UNIT_ONLY=1 tests/run.sh | tee build-san/test-san.log
rc2=${PIPESTATUS[0]}
p=0; f=0; s=0
for log in build/test-normal.log build-san/test-san.log; do
    read -r a _ b _ c _ < <(tail -n 1 "$log")
    p=$((p+a)); f=$((f+b)); s=$((s+c))
done
echo "$p passed, $f failed, $s skipped"
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
