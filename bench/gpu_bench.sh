#!/usr/bin/env bash
# The GPU benchmark and parity run, in one device call. Built beforehand on a
# build machine (nvcc there; FFmpeg is not needed):
#   make BUILD=build-gpu VIDEO=0 -j2 build-gpu/lipar build-gpu/tests/test_cuda_ops build-gpu/tests/test_cuda_conv \
#        build-gpu/bench/bench_dit build-gpu/bench/bench_taehv build-gpu/bench/bench_e2e
# and run from the repository root on the GPU machine with
#   gpu-libs/  the CPU libraries the binaries need (libopenblas.so.0.xz, libgfortran, libquadmath)
#   gpu-data/  golden files: sf_dit_t2v*.safetensors, lipar_edit_{inputs,full,direct,window}, lipar_mask_static60x104,
#              taehv_w21
# Prints: the card, the CUDA-vs-CPU op parity table, the golden checks on the
# CUDA backend, the DiT loop (96 frames, 832x480, 30 layers of width 1536,
# steps 400/300/250, sink 1 + window 6) without pruning and with LIPAR masks,
# the PyTorch reference of the same loop, and the bf16 GEMM peak.
set -u
B=${B:-build-gpu}
OUT=${OUT:-/tmp}
if [ -f gpu-libs/libopenblas.so.0.xz ] && [ ! -f gpu-libs/libopenblas.so.0 ]; then
    python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('gpu-libs/libopenblas.so.0.xz'), open('gpu-libs/libopenblas.so.0', 'wb'))"
fi
export LD_LIBRARY_PATH=$PWD/gpu-libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
step() { echo; echo "== $*"; }

step "CUDA op parity against the CPU backend"
timeout 240 "$B/tests/test_cuda_ops" 2>&1 | tee "$OUT/parity.log"

step "CUDA convolution (TAEHV) parity"
LIPAR_SHARED=gpu-share timeout 240 "$B/tests/test_cuda_conv" 2>&1 | tee "$OUT/conv.log" | tail -n 30

step "golden checks on the CUDA backend (bf16 tolerance 2e-2)"
for f in gpu-data/*.safetensors; do
    case $f in *lipar_mask*|*lipar_edit_inputs*) continue;; esac
    printf '%s: ' "$(basename "$f")"
    timeout 120 "$B/lipar" check "$f" --backend cuda > "$OUT/check.log" 2>&1; rc=$?
    tail -n 1 "$OUT/check.log"; [ $rc -eq 0 ] || grep -v " ok$" "$OUT/check.log" | head -n 5
done

step "DiT loop, lipar CUDA backend"
timeout 300 "$B/bench/bench_dit" loop --backend cuda --layers "${LAYERS:-30}" --frames 96 --keep-file gpu-data/lipar_mask_static60x104.safetensors
timeout 300 "$B/bench/bench_dit" loop --backend cuda --layers "${LAYERS:-30}" --frames 96 --keep 0.5,0.84 | tail -n 2

step "TAEHV encode + decode, 96 frames at 832x480, CUDA"
timeout 300 "$B/bench/bench_taehv" gpu-data/taehv_w21.safetensors --backend cuda --frames 96 2>&1 | tail -n 6

step "end to end (session API: TAEHV encode, mask, DiT, TAEHV decode), random weights at the published sizes, CUDA"
timeout 400 "$B/bench/bench_e2e" --backend cuda --frames 96 2>&1 | tail -n 8

step "DiT loop, PyTorch reference (bench/torch_ref.py, SDPA, bf16)"
timeout 300 python3 bench/torch_ref.py --frames 96 --layers "${LAYERS:-30}" 2>&1 | tail -n 3
timeout 300 python3 bench/torch_ref.py --frames 96 --layers "${LAYERS:-30}" --keep 0.3 2>&1 | tail -n 3

step "bf16 GEMM peak (torch.matmul 8192^3, median of 20)"
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
