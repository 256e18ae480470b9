#!/usr/bin/env bash
# The GPU benchmark and parity run, in one device call. Built beforehand on a
# build machine (nvcc there; FFmpeg is not needed: this build's `lipar edit`
# reads and writes y4m and raw rgb24 only):
#   make BUILD=build-gpu VIDEO=0 -j2 build-gpu/lipar build-gpu/tests/test_cuda_ops build-gpu/tests/test_cuda_conv \
#        build-gpu/tests/test_cuda_vae build-gpu/tests/test_cuda_attention build-gpu/tests/test_cuda_mask \
#        build-gpu/bench/bench_dit build-gpu/bench/bench_taehv build-gpu/bench/bench_e2e build-gpu/bench/bench_wan_vae
# and run from the repository root on the GPU machine, carrying build-gpu/ (or,
# to fit the 64 MiB transfer limit, a folder of the ten binaries compressed with
# xz, keeping their relative paths, e.g. gpu-bin/bench/bench_dit.xz, run with
# B=gpu-bin: any *.xz under $B, gpu-libs/ and gpu-data/ is unpacked first),
#   gpu-libs/  the CPU libraries the binaries need (libopenblas.so.0.xz, libgfortran, libquadmath)
#   gpu-data/  golden files: sf_dit_t2v*.safetensors, lipar_edit_{inputs,full,direct,window}, lipar_mask_static60x104,
#              taehv_w21, wan_vae; and the real clips made here by `bench/make_gpu_clips.sh gpu-data` (a VIDEO=1 build):
#              {vtest,megamind}_832x480.y4m.xz (96 frames each) and their masks lipar_mask_{vtest,megamind}60x104
# All of gpu-data/ does not fit the transfer limit together with the binaries:
# the steps whose inputs are missing say so and are skipped, and STEPS (below)
# picks steps by name, so the report can come from two calls with different
# parts of gpu-data/ (e.g. the golden files and masks with STEPS="ops attention
# golden dit dit_profile torch peak", then taehv_w21 and the clips with
# STEPS="conv taehv e2e edit").
# Prints: the card, the CUDA-vs-CPU op parity tables (ops and graphs, the
# keep-mask's ops and stream, attention with its timing, convolutions, the
# Wan VAE's ops), the golden checks on the CUDA backend (the DiT and LIPAR
# ones also with CUDA graphs), the DiT loop (96 frames, 832x480, 30 layers of
# width 1536, steps 400/300/250, sink 1 + window 6) without pruning and with
# LIPAR masks (the golden static mask, the masks of the real static and
# moving clips, these two also with CUDA graphs, and random ones) and its op
# profile, TAEHV alone and its op profile, the
# end-to-end session on procedural clips, then
# `lipar edit` end to end on the real clips (random weights at the published
# sizes: FPS over all frames and after the first chunk, stage times, peak
# device memory), the PyTorch reference of the DiT loop (unpruned, random 30%
# kept, and the two clips' masks), and the bf16 GEMM peak.
# Files: the logs and each `lipar edit` run's stats JSON in $OUT, the edited
# videos in /tmp/lipar-e2e.
set -u
B=${B:-build-gpu}
OUT=${OUT:-/tmp}
# Files carried xz-compressed (to fit the transfer limit) are unpacked beside
# themselves once: binaries under $B (kept executable), libraries, data, clips.
for f in "$B"/*.xz "$B"/*/*.xz gpu-libs/*.xz gpu-data/*.xz; do
    [ -f "$f" ] && [ ! -f "${f%.xz}" ] || continue
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'), 1 << 20)" \
        "$f" "${f%.xz}"
    case $f in "$B"/*) chmod +x "${f%.xz}";; esac
done
export LD_LIBRARY_PATH=$PWD/gpu-libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
# STEPS selects steps by name (default: all of them): ops mask attention conv vae
# golden dit dit_profile taehv wan_vae e2e edit torch peak.
STEPS=${STEPS:-ops mask attention conv vae golden dit dit_profile taehv wan_vae e2e edit torch peak}
step() { # name title: prints the title and succeeds when the step is selected
    case " $STEPS " in *" $1 "*) ;; *) return 1;; esac
    echo; echo "== $2"
}

if step ops "CUDA op parity against the CPU backend"; then
    timeout 240 "$B/tests/test_cuda_ops" 2>&1 | tee "$OUT/parity.log"
fi

if step mask "CUDA keep-mask parity (ops and the streaming mask, bit for bit)"; then
    timeout 240 "$B/tests/test_cuda_mask" 2>&1 | tee "$OUT/mask.log" | grep -E "FAIL|passed|  ok|  skip"
fi

if step attention "CUDA attention parity (mma.sync, wgmma kernels 1 and 2) and timing"; then
    LIPAR_TIMING=1 timeout 240 "$B/tests/test_cuda_attention" 2>&1 | tee "$OUT/attention.log" | grep -E "FAIL|TFLOP|passed|  ok|  skip"
fi

if step conv "CUDA convolution (TAEHV) parity"; then
    LIPAR_SHARED=gpu-share timeout 240 "$B/tests/test_cuda_conv" 2>&1 | tee "$OUT/conv.log" | tail -n 30
fi

if step vae "CUDA Wan VAE op parity (conv3d, channel RMS norm, upsample, spatial attention)"; then
    timeout 240 "$B/tests/test_cuda_vae" 2>&1 | tee "$OUT/vae.log" | tail -n 30
fi

if step golden "golden checks on the CUDA backend (bf16 tolerance 2e-2)"; then
    for f in gpu-data/*.safetensors; do
        case $f in *lipar_mask*|*lipar_edit_inputs*) continue;; esac
        printf '%s: ' "$(basename "$f")"
        timeout 120 "$B/lipar" check "$f" --backend cuda > "$OUT/check.log" 2>&1; rc=$?
        tail -n 1 "$OUT/check.log"; [ $rc -eq 0 ] || grep -v " ok$" "$OUT/check.log" | head -n 5
        case $f in *sf_dit*|*lipar_edit*) ;; *) continue;; esac
        LIPAR_CUDA_GRAPHS=1 timeout 120 "$B/lipar" check "$f" --backend cuda > "$OUT/check_graphs.log" 2>&1
        cmp -s "$OUT/check.log" "$OUT/check_graphs.log" && echo "  with CUDA graphs: the same errors" ||
            { echo "  with CUDA graphs:"; tail -n 3 "$OUT/check_graphs.log"; }
    done
fi

if step dit "DiT loop, lipar CUDA backend (masks: golden static, vtest = real static, megamind = real moving, random)"; then
    timeout 300 "$B/bench/bench_dit" loop --backend cuda --layers "${LAYERS:-30}" --frames 96 --keep-file gpu-data/lipar_mask_static60x104.safetensors
    for clip in vtest megamind; do
        mask=gpu-data/lipar_mask_${clip}60x104.safetensors
        if [ -f "$mask" ]; then
            timeout 300 "$B/bench/bench_dit" loop --backend cuda --layers "${LAYERS:-30}" --frames 96 --keep-file "$mask" | tail -n 1
            LIPAR_CUDA_GRAPHS=1 timeout 300 "$B/bench/bench_dit" loop --backend cuda --layers "${LAYERS:-30}" --frames 96 \
                --keep-file "$mask" | tail -n 1 | sed 's/^| cuda |/| cuda + graphs |/'
        else echo "(no $mask: run bench/make_gpu_clips.sh gpu-data on the build machine)"; fi
    done
    timeout 300 "$B/bench/bench_dit" loop --backend cuda --layers "${LAYERS:-30}" --frames 96 --keep 0.5,0.84 | tail -n 2
fi

if step dit_profile "DiT loop op profile (ops waited on one by one): no pruning, and the moving clip's mask"; then
    mask=gpu-data/lipar_mask_megamind60x104.safetensors
    [ -f "$mask" ] || mask=gpu-data/lipar_mask_static60x104.safetensors
    timeout 300 "$B/bench/bench_dit" loop --backend cuda --layers "${LAYERS:-30}" --frames 48 --keep-file "$mask" --profile 1 |
        grep -v "^| cuda"
fi

if step taehv "TAEHV encode + decode, 96 frames at 832x480, CUDA, then its op profile"; then
    if [ -f gpu-data/taehv_w21.safetensors ]; then
        timeout 300 "$B/bench/bench_taehv" gpu-data/taehv_w21.safetensors --backend cuda --frames 96 2>&1 | tail -n 2
        timeout 300 "$B/bench/bench_taehv" gpu-data/taehv_w21.safetensors --backend cuda --frames 24 --profile 2>&1 |
            grep -v "^taehv\|^encode:\|^decode:"
    else echo "(no gpu-data/taehv_w21.safetensors)"; fi
fi

if step wan_vae "Wan VAE encode + decode at 832x480 (random weights at the published size), CUDA"; then
    timeout 300 "$B/bench/bench_wan_vae" --backend cuda --latents 4 2>&1 | tee "$OUT/wan_vae.log" | tail -n 5
fi

if step e2e "end to end (session API: TAEHV encode, mask, DiT, TAEHV decode), random weights at the published sizes, CUDA"; then
    timeout 400 "$B/bench/bench_e2e" --backend cuda --frames 96 2>&1 | tail -n 8
fi

if step edit "lipar edit end to end on the real clips (--backend cuda --demo full: random weights at the published sizes, 832x480, 96 frames)"; then
    # A row from a run's stats: the kept fraction and the stage times are means over
    # the chunks after the first; FPS over all frames (wall clock, from the first
    # frame read to the last written) and after the first chunk's edit.
    e2e_row() { # clip strategy stats.json
        python3 - "$@" <<'PY'
import json, sys
clip, strategy, path = sys.argv[1:4]
d = json.load(open(path))
s, ch = d["summary"], d["chunks"][1:] or d["chunks"]
mean = lambda f: sum(f(c) for c in ch) / len(ch)
ms = lambda k: 1e3 * mean(lambda c: c["seconds"][k])
print(f"| {clip} | {strategy} | {mean(lambda c: c['kept_fraction']):.3f} | {s['fps']:.1f} | "
      f"{s['after_first_chunk']['fps']:.1f} | {ms('encode'):.0f} | {ms('mask'):.0f} | {ms('dit'):.0f} | "
      f"{ms('decode'):.0f} | {s['peak_device_bytes'] / 1e9:.2f} | "
      + " / ".join(f"{s['caller_seconds'][k]:.2f}" for k in ("read", "push", "pull", "write")) + " |")
PY
    }
    echo "| clip | strategy | kept | FPS | FPS after chunk 0 | encode ms/chunk | mask | DiT | decode | peak device GB | caller waits read / push / pull / write s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    mkdir -p /tmp/lipar-e2e
    for run in vtest:lipar megamind:lipar megamind:none; do
        clip=${run%%:*} strategy=${run#*:}
        in=gpu-data/${clip}_832x480.y4m stats=$OUT/e2e_${clip}_${strategy}.json
        if [ ! -f "$in" ]; then echo "| $clip | $strategy | (no gpu-data/${clip}_832x480.y4m.xz) |"; continue; fi
        if timeout 300 "$B/lipar" edit "$in" -p "a watercolor painting" -o "/tmp/lipar-e2e/${clip}_${strategy}.y4m" \
            --backend cuda --demo full --prune "$strategy" --stats "$stats" --quiet > "$OUT/e2e.log" 2>&1; then
            e2e_row "$clip" "$strategy" "$stats"
        else echo "| $clip | $strategy | failed: $(tail -n 1 "$OUT/e2e.log") |"; fi
    done
fi

if step torch "DiT loop, PyTorch reference (bench/torch_ref.py, SDPA, bf16)"; then
    timeout 300 python3 bench/torch_ref.py --frames 96 --layers "${LAYERS:-30}" 2>&1 | tail -n 3
    timeout 300 python3 bench/torch_ref.py --frames 96 --layers "${LAYERS:-30}" --keep 0.3 2>&1 | tail -n 1
    for clip in vtest megamind; do # the masks of the dit step's rows: the same loop, pruned alike
        mask=gpu-data/lipar_mask_${clip}60x104.safetensors
        [ -f "$mask" ] && timeout 300 python3 bench/torch_ref.py --frames 96 --layers "${LAYERS:-30}" --keep-file "$mask" 2>&1 |
            tail -n 1
    done
fi

if step peak "bf16 GEMM peak (torch.matmul 8192^3, median of 20)"; then
    python3 - <<'PY'
import torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
for _ in range(3): a @ b
ts = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); a @ b; e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
ts.sort()
print(f"bf16 GEMM 8192^3: {2 * 8192**3 / (ts[10] / 1e3) / 1e12:.0f} TFLOP/s")
PY
fi
