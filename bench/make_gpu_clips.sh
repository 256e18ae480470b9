#!/usr/bin/env bash
# The real-clip inputs of bench/gpu_bench.sh, made here with a normal (VIDEO=1)
# build, which decodes the .avi files the GPU machines cannot:
#   make -j2 build/bench/clip_convert build/bench/clip_masks && bench/make_gpu_clips.sh gpu-data
# For vtest (a static surveillance camera) and megamind (animation with camera
# motion) of ../shared/data (or $LIPAR_SHARED/data) it writes into OUTDIR
#   NAME_832x480.y4m.xz   the first 96 frames exactly as `lipar edit` reads the
#                         clip (832x480, 16 fps, stretched), as y4m compressed
#                         with xz (delta + LZMA2 -9e; python3's lzma reads it)
#   lipar_mask_NAME60x104.safetensors   the session's streaming keep-masks of
#                         those 96 frames (24 latent frames, out.keep U8
#                         [24, 30, 52]) for `bench_dit loop --keep-file`
# and prints their sizes and kept fractions. Takes about 5 minutes (xz -9e).
set -eu
cd "$(dirname "$0")/.."
OUTDIR=${1:?usage: bench/make_gpu_clips.sh OUTDIR}
B=${B:-build}
DATA=${LIPAR_SHARED:-../shared}/data
mkdir -p "$OUTDIR"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
for spec in vtest:vtest_768x576.avi megamind:megamind_720x528.avi; do
    name=${spec%%:*}
    "$B/bench/clip_convert" "$DATA/${spec#*:}" "$T/$name.y4m" --frames 96 --size 832x480 --fps 16
    # the masks of the frames as shipped (after the y4m's 4:2:0), as the GPU run reads them
    "$B/bench/clip_masks" "$T/$name.y4m" "$OUTDIR/lipar_mask_${name}60x104.safetensors" --frames 96 --size 832x480
    python3 - "$T/$name.y4m" "$OUTDIR/${name}_832x480.y4m.xz" <<'PY'
import lzma, shutil, sys
filters = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
with open(sys.argv[1], "rb") as src, lzma.open(sys.argv[2], "wb", filters=filters) as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
done
ls -l "$OUTDIR"/*_832x480.y4m.xz "$OUTDIR"/lipar_mask_vtest60x104.safetensors "$OUTDIR"/lipar_mask_megamind60x104.safetensors
