#!/usr/bin/env bash
# Runs `lipar check` on every golden file of ../shared/golden (or
# $LIPAR_SHARED/golden), the PyTorch-checkpoint variants with --weights, and the
# tokenizer cases. Prints one line per check and a last line
# "N passed, M failed, K skipped"; exits 77 when the shared folder is absent.
set -u
BUILD=${BUILD:-build}
LIPAR=${LIPAR:-$BUILD/lipar}
SHARED=${LIPAR_SHARED:-../shared}
G=$SHARED/golden
if [ ! -d "$G" ]; then
    echo "  (skipping golden checks: $G not found; set LIPAR_SHARED to the shared/ folder)"
    exit 77
fi
pass=0; fail=0
run() {
    local name=$1; shift
    local log; log=$(mktemp)
    if "$@" >"$log" 2>&1; then
        pass=$((pass+1)); echo "  ok    $name ($(tail -n 1 "$log"))"
    else
        fail=$((fail+1)); echo "  FAIL  $name"; sed 's/^/        /' "$log"
    fi
    rm -f "$log"
}
for f in "$G"/*.safetensors; do
    case $(basename "$f") in
        lipar_edit_inputs.safetensors) continue;; # inputs of the lipar_edit_* cases
    esac
    run "check $(basename "$f")" "$LIPAR" check "$f"
done
[ -f "$G/sf_dit_t2v.pt" ] && run "check sf_dit_t2v --weights .pt" "$LIPAR" check "$G/sf_dit_t2v.safetensors" --weights "$G/sf_dit_t2v.pt"
[ -f "$G/wan_vae.pth" ] && run "check wan_vae --weights .pth" "$LIPAR" check "$G/wan_vae.safetensors" --weights "$G/wan_vae.pth"
[ -f "$G/umt5_tiny_bf16.pth" ] && run "check umt5 --weights .pth" "$LIPAR" check "$G/umt5_tiny.safetensors" --weights "$G/umt5_tiny_bf16.pth"
[ -f "$G/spm_unigram_600.json" ] && run "tokenize-check spm_unigram_600" "$LIPAR" tokenize-check "$G/spm_unigram_600.model" "$G/spm_unigram_600.json"
echo "$pass passed, $fail failed, 0 skipped"
[ "$fail" -eq 0 ]
