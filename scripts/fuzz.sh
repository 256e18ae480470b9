#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ (safetensors, zip, pickle) with clang,
# ASan and UBSan, seeds each from small files derived from ../shared (made in
# a temporary folder, nothing is committed), and runs each for SECONDS
# (default 60). Fails if any target crashes, leaks or trips a sanitizer; the
# crashing input is kept under $FUZZ_OUT (default build/fuzz/).
#   usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-60}
OUT=${FUZZ_OUT:-build/fuzz}
SHARED=${LIPAR_SHARED:-../shared}
CC=${FUZZ_CC:-clang}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The readers and what they use; no video/FFmpeg or model code.
SRC="src/base/status.c src/base/json.c src/io/tensor.c src/io/tensor_file.c src/io/safetensors.c src/io/zip.c src/io/torch_pickle.c"
FLAGS="-std=c11 -g -O1 -D_GNU_SOURCE -pthread -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
for t in safetensors zip pickle; do
    echo "== building fuzz_$t"
    $CC $FLAGS -o "$OUT/fuzz_$t" "fuzz/fuzz_$t.c" $SRC -lm
done
echo "== building fuzz_protobuf"
$CC $FLAGS -o "$OUT/fuzz_protobuf" fuzz/fuzz_protobuf.c src/model/tokenizer.c src/io/protobuf.c src/base/status.c -lm

# Seed corpora.
mkdir -p "$WORK/safetensors" "$WORK/zip" "$WORK/pickle" "$WORK/protobuf"
[ -f "$SHARED/golden/spm_unigram_600.model" ] && cp "$SHARED/golden/spm_unigram_600.model" "$WORK/protobuf/"
if [ -d "$SHARED/golden" ] && command -v python3 >/dev/null; then
    python3 - "$SHARED" "$WORK" <<'PY'
import io, json, os, pickle, struct, sys, types, zipfile
shared, work = sys.argv[1], sys.argv[2]
golden = os.path.join(shared, "golden")

# safetensors: the header and the first few tensors of each golden file, re-packed.
for name in sorted(os.listdir(golden)):
    if not name.endswith(".safetensors"):
        continue
    with open(os.path.join(golden, name), "rb") as fp:
        n = struct.unpack("<Q", fp.read(8))[0]
        head = json.loads(fp.read(n))
        base = 8 + n
        meta = head.pop("__metadata__", None)
        out, data = {}, b""
        for k, v in list(head.items())[:3]:
            b, e = v["data_offsets"]
            if e - b > 4096:
                continue
            fp.seek(base + b)
            chunk = fp.read(e - b)
            out[k] = dict(v, data_offsets=[len(data), len(data) + len(chunk)])
            data += chunk
        if meta:
            out["__metadata__"] = meta
        h = json.dumps(out).encode()
        with open(os.path.join(work, "safetensors", name), "wb") as w:
            w.write(struct.pack("<Q", len(h)) + h + data)

# pickles: data.pkl of each golden .pt/.pth, and small state_dicts written by
# Python's own pickler through stand-ins for the torch globals.
def pkls():
    for d in (golden, os.path.join(shared, "data")):
        for name in sorted(os.listdir(d)):
            if name.endswith((".pt", ".pth")):
                z = zipfile.ZipFile(os.path.join(d, name))
                yield name, z, [m for m in z.namelist() if m.endswith("/data.pkl")][0]
for name, z, pkl in pkls():
    with open(os.path.join(work, "pickle", name + ".pkl"), "wb") as w:
        w.write(z.read(pkl))
    # zip seeds: the archive with storages cut to 256 bytes, stored, deflated and ZIP64
    for mode, comp, z64 in (("stored", zipfile.ZIP_STORED, False), ("deflated", zipfile.ZIP_DEFLATED, False),
                            ("zip64", zipfile.ZIP_STORED, True)):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=comp) as out:
            for m in z.namelist()[:8]:
                with out.open(m, "w", force_zip64=z64) as f:
                    f.write(z.read(m)[:256])
        with open(os.path.join(work, "zip", f"{name}.{mode}.zip"), "wb") as w:
            w.write(buf.getvalue())

torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
class Storage:
    def __init__(self, key, numel): self.key, self.numel = key, numel
for cname in ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage"):
    setattr(torch, cname, type(cname, (), {"__module__": "torch"}))
class Tensor:
    def __init__(self, stype, key, numel, off, size, stride):
        self.args = (Storage((stype, key), numel), off, size, stride)
    def __reduce__(self):
        import collections
        return (utils._rebuild_tensor_v2, self.args + (False, collections.OrderedDict()))
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
class P(pickle.Pickler):
    def persistent_id(self, o):
        if isinstance(o, Storage):
            stype, key = o.key
            return ("storage", getattr(torch, stype), key, "cpu", o.numel)
        return None
import collections
cases = {
    "flat": {"w": Tensor("FloatStorage", "0", 16, 0, (4, 4), (4, 1)), "b": Tensor("FloatStorage", "0", 16, 4, (4,), (1,))},
    "nested": {"generator_ema": collections.OrderedDict(model={"x.weight": Tensor("HalfStorage", "1", 32, 0, (2, 16), (16, 1))}),
               "step": 7, "name": "sf", "lr": 0.5, "flags": [True, None]},
    "strided": {"t": Tensor("BFloat16Storage", "2", 32, 1, (3, 5), (1, 6)), "i": Tensor("LongStorage", "3", 8, 0, (2, 2), (1, 2))},
}
for proto in (2, 4, 5):
    for k, v in cases.items():
        buf = io.BytesIO()
        P(buf, protocol=proto).dump(v)
        with open(os.path.join(work, "pickle", f"{k}.p{proto}.pkl"), "wb") as w:
            w.write(buf.getvalue())
PY
fi
echo "seeds: $(ls "$WORK/safetensors" | wc -l) safetensors, $(ls "$WORK/zip" | wc -l) zip, $(ls "$WORK/pickle" | wc -l) pickle"

status=0
for t in safetensors zip pickle protobuf; do
    echo "== fuzz_$t for ${SECONDS_PER}s"
    mkdir -p "$WORK/corpus_$t"
    if "$OUT/fuzz_$t" -max_total_time="$SECONDS_PER" -timeout=10 -rss_limit_mb=2048 -max_len=$([ "$t" = protobuf ] && echo 262144 || echo 65536) \
        -print_final_stats=1 -artifact_prefix="$OUT/crash_$t-" "$WORK/corpus_$t" "$WORK/$t" >"$OUT/fuzz_$t.log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/fuzz_$t.log" | grep -o '[0-9]*$' || true)
        cov=$(grep -o 'cov: [0-9]*' "$OUT/fuzz_$t.log" | tail -1 || true)
        echo "   ok: ${runs:-?} executions, $cov, corpus $(ls "$WORK/corpus_$t" | wc -l) inputs"
    else
        status=1
        echo "   FAILED (log: $OUT/fuzz_$t.log)"
        grep -m5 -E 'ERROR|SUMMARY|runtime error' "$OUT/fuzz_$t.log" || true
        ls "$OUT"/crash_"$t"-* 2>/dev/null || true
    fi
done
exit $status
