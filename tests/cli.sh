#!/usr/bin/env bash
# End-to-end tests of `lipar edit` (issue 7): frame counts, sizes and rates of
# the output, stats JSON, side-by-side output, piping to ffprobe, a prompt
# change mid-stream, SIGINT, and the errors for bad input; y4m and raw rgb24
# in and out (what a build without FFmpeg reads and writes), with clips made by
# bench/clip_convert, and the frames of a side-by-side view in order through
# the reader and writer threads. With NOVIDEO=<build folder of a VIDEO=0 build>, also
# that build's `lipar edit` on y4m and its refusal of other files. Uses the
# sample clips of ../shared/data, else those of Debian's opencv-doc; skips (77)
# without them or without ffprobe.
set -u
BUILD=${BUILD:-build}
LIPAR=$PWD/$BUILD/lipar
SHARED=${LIPAR_SHARED:-../shared}
DATA=$SHARED/data
OPENCV=/usr/share/doc/opencv-doc/examples/data
if [ -f "$DATA/vtest_768x576.avi" ]; then
    VTEST=$DATA/vtest_768x576.avi MEGA=$DATA/megamind_720x528.avi TREE=$DATA/tree_320x240.avi
elif [ -f "$OPENCV/vtest.avi" ]; then
    VTEST=$OPENCV/vtest.avi MEGA=$OPENCV/Megamind.avi TREE=$OPENCV/tree.avi
else
    echo "  (skipping CLI tests: no sample clips in $DATA or $OPENCV)"; exit 77
fi
command -v ffprobe >/dev/null || { echo "  (skipping CLI tests: ffprobe not installed)"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); echo "  ok    $1"; }
bad() { fail=$((fail+1)); echo "  FAIL  $1"; [ -f "$T/log" ] && sed 's/^/        /' "$T/log" | tail -n 20; }
probe() { # frames,width,height,rate of a video
    ffprobe -v error -count_frames -select_streams v:0 \
        -show_entries stream=nb_read_frames,width,height,r_frame_rate -of csv=p=0 "$1" 2>/dev/null
}
json_ok() { # well-formed JSON with N chunk records
    python3 - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
assert len(d["chunks"]) == n, (len(d["chunks"]), n)
for c in d["chunks"]:
    assert set(c["seconds"]) == {"encode", "mask", "dit", "decode", "total"}
    assert len(c["kept"]) == 3 and all(0 <= k <= 1 for k in c["kept"])
PY
}
SMALL="--size 160x96 --quiet"

# 1. frame count, size and rate after resampling, for each clip (40 input frames = 4 chunks, the last partial)
for clip in "$VTEST" "$MEGA" "$TREE"; do
    name=$(basename "$clip")
    if "$LIPAR" edit "$clip" -p "a watercolor painting" -o "$T/o.mp4" $SMALL --max-frames 40 --stats "$T/s.json" \
        --side-by-side "$T/sbs.mp4" >"$T/log" 2>&1 \
       && [ "$(probe "$T/o.mp4")" = "160,96,16/1,40" ] && [ "$(probe "$T/sbs.mp4")" = "480,96,16/1,40" ] \
       && json_ok "$T/s.json" 4 2>>"$T/log"; then ok "edit $name: 40 frames 160x96 at 16 fps, stats, side-by-side"
    else bad "edit $name (got: $(probe "$T/o.mp4"))"; fi
done

# 2. the whole-clip frame count follows the 16 fps resampling (tree: 444 frames at 15 fps, mostly repeats)
expect=$(ffprobe -v error -select_streams v:0 -show_entries stream=r_frame_rate,duration -of csv=p=0 "$MEGA" | head -n1)
if "$LIPAR" edit "$MEGA" -p "x" -o "$T/m.mp4" $SMALL >"$T/log" 2>&1; then
    frames=$(probe "$T/m.mp4" | cut -d, -f4)
    # 270 frames at 24 fps = 11.25 s -> 180 frames at 16 fps
    if [ "$frames" = 180 ]; then ok "Megamind whole clip: 180 frames at 16 fps ($expect)"; else bad "Megamind: $frames frames"; fi
else bad "Megamind whole clip"; fi

# 3. -o - pipes y4m into ffprobe
if "$LIPAR" edit "$TREE" -p "x" -o - $SMALL --max-frames 24 2>"$T/log" | probe - >"$T/p" && [ "$(cat "$T/p")" = "160,96,16/1,24" ]; then
    ok "-o - piped into ffprobe"
else bad "-o - pipe (got: $(cat "$T/p" 2>/dev/null))"; fi

# 4. a prompt change at frame 20 takes effect from the chunk holding it (chunk 1: frames 12-23)
if "$LIPAR" edit "$VTEST" -p "first" --prompt-at "20:second prompt" -o "$T/c.mp4" $SMALL --max-frames 36 \
    --stats "$T/c.json" >"$T/log" 2>&1 && python3 - "$T/c.json" <<'PY' 2>>"$T/log"
import json, sys
v = [c["prompt_version"] for c in json.load(open(sys.argv[1]))["chunks"]]
assert v == [0, 1, 1], v
PY
then ok "prompt change mid-stream swaps the text cache from the next chunk"; else bad "prompt change"; fi

# 5. SIGINT finishes the current chunk and leaves a playable file
"$LIPAR" edit "$VTEST" -p "x" -o "$T/i.mp4" $SMALL >"$T/log" 2>&1 &
pid=$!
sleep 4; kill -INT $pid; wait $pid; rc=$?
n=$(probe "$T/i.mp4" | cut -d, -f4)
if [ "$rc" = 130 ] && [ -n "$n" ] && [ "$n" -gt 0 ]; then ok "SIGINT: exit 130, playable file with $n frames"
else bad "SIGINT (rc=$rc, frames=$n)"; fi

# 6. bad input: clear error, non-zero exit, no output file left behind
expect_error() { # description, pattern, command...
    local what=$1 pat=$2; shift 2
    rm -f "$T/e.mp4"
    if "$@" >"$T/log" 2>&1; then bad "$what: exit 0"; return; fi
    if grep -qi -- "$pat" "$T/log" && [ ! -e "$T/e.mp4" ]; then ok "$what"; else bad "$what (message)"; fi
}
expect_error "missing input" "cannot open\|No such file" "$LIPAR" edit "$T/nope.mp4" -p x -o "$T/e.mp4" --quiet
echo "not a video" >"$T/text.mp4"
expect_error "unreadable input" "$T/text.mp4" "$LIPAR" edit "$T/text.mp4" -p x -o "$T/e.mp4" --quiet
if command -v ffmpeg >/dev/null; then
    ffmpeg -v error -f lavfi -i anullsrc -t 1 "$T/a.wav" -y
    expect_error "no video stream" "video" "$LIPAR" edit "$T/a.wav" -p x -o "$T/e.mp4" --quiet
fi
printf 'YUV4MPEG2 W64 H64 F16:1 Ip A1:1 C420jpeg\n' >"$T/empty.y4m"
expect_error "zero frames" "frame" "$LIPAR" edit "$T/empty.y4m" -p x -o "$T/e.mp4" --quiet
expect_error "size not a multiple of 16" "multiple" "$LIPAR" edit "$TREE" -p x -o "$T/e.mp4" --size 100x100 --quiet
expect_error "a size this machine cannot hold" "memory" "$LIPAR" edit "$TREE" -p x -o "$T/e.mp4" --size 8192x8192 --quiet
expect_error "missing prompt file" "prompt file" "$LIPAR" edit "$TREE" --prompt-file "$T/none.txt" -o "$T/e.mp4" --quiet
G=$SHARED/golden
if [ -f "$G/sf_dit_t2v_window.safetensors" ]; then
    expect_error "weights that do not match (text width)" "text encoder" "$LIPAR" edit "$TREE" -p x -o "$T/e.mp4" --quiet \
        --dit "$G/sf_dit_t2v_window.safetensors" --vae-weights "$G/taehv_w21.safetensors" \
        --text-encoder "$G/umt5_tiny.safetensors" --tokenizer "$G/spm_unigram_600.model"
    expect_error "weights that do not match (VAE file)" "missing\|VAE" "$LIPAR" edit "$TREE" -p x -o "$T/e.mp4" --quiet \
        --dit "$G/sf_dit_t2v.safetensors" --vae-weights "$G/wan_vae.safetensors" \
        --text-encoder "$G/umt5_tiny.safetensors" --tokenizer "$G/spm_unigram_600.model"
fi
# 7. weights from files (the small golden DiT, TAEHV and umT5 with the golden
#    tokenizer), the text encoder path and the cached prompt embedding path
if [ -f "$G/sf_dit_t2v.safetensors" ]; then
    W="--dit $G/sf_dit_t2v.safetensors --vae-weights $G/taehv_w21.safetensors"
    TXT="--text-encoder $G/umt5_tiny.safetensors --tokenizer $G/spm_unigram_600.model"
    if "$LIPAR" edit "$TREE" -p "a red car on the road" -o "$T/w.mp4" $W $TXT $SMALL --max-frames 24 >"$T/log" 2>&1 \
       && [ "$(probe "$T/w.mp4")" = "160,96,16/1,24" ]; then ok "edit with weight files (DiT, TAEHV, umT5 + tokenizer)"
    else bad "edit with weight files"; fi
    if "$LIPAR" encode-prompt $TXT "a red car on the road" -o "$T/emb.safetensors" >"$T/log" 2>&1 \
       && "$LIPAR" edit "$TREE" -p "a red car on the road" -o "$T/e2.mp4" $W --prompt-embedding "$T/emb.safetensors" \
          $SMALL --max-frames 24 >>"$T/log" 2>&1 && cmp -s "$T/w.mp4" "$T/e2.mp4"; then
        ok "encode-prompt + --prompt-embedding gives the same video as the text encoder"
    else bad "encode-prompt / --prompt-embedding"; fi
    expect_error "an embedding made for another prompt" "embedding" "$LIPAR" edit "$TREE" -p "another prompt" \
        -o "$T/e.mp4" $W --prompt-embedding "$T/emb.safetensors" --quiet
    # the Wan VAE (its first chunk is 9 frames, then 12; frames cross the session as bytes)
    if "$LIPAR" edit "$TREE" -p "a red car on the road" -o "$T/wan.mp4" --dit "$G/sf_dit_t2v.safetensors" \
          --vae wan --vae-weights "$G/wan_vae.safetensors" $TXT $SMALL --max-frames 21 >"$T/log" 2>&1 \
       && [ "$(probe "$T/wan.mp4")" = "160,96,16/1,21" ]; then ok "edit with the Wan VAE (weight files)"
    else bad "edit with the Wan VAE: $(tail -n 1 "$T/log")"; fi
fi
# 8. y4m and raw rgb24 in and out: a clip converted as `lipar edit` reads it
#    (bench/clip_convert), edited y4m -> y4m and rgb -> rgb (raw input: frames of
#    --size at --fps), with the wall-clock and device-memory figures in the stats
CONVERT=$PWD/$BUILD/bench/clip_convert
if "$CONVERT" "$VTEST" "$T/v.y4m" --frames 24 --size 160x96 >"$T/log" 2>&1 \
   && [ "$(probe "$T/v.y4m")" = "160,96,16/1,24" ]; then ok "clip_convert: 24 frames of y4m as lipar edit reads them"
else bad "clip_convert to y4m"; fi
if "$LIPAR" edit "$T/v.y4m" -p "a watercolor painting" -o "$T/vo.y4m" $SMALL --stats "$T/v.json" >"$T/log" 2>&1 \
   && [ "$(probe "$T/vo.y4m")" = "160,96,16/1,24" ] && json_ok "$T/v.json" 2 2>>"$T/log" \
   && python3 - "$T/v.json" <<'PY' 2>>"$T/log"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["backend"] == "cpu" and s["summary"]["peak_device_bytes"] == 0, s
a = s["summary"]["after_first_chunk"]
assert a["frames"] == 12 and a["seconds"] > 0 and a["fps"] > 0, a
c, io = s["summary"]["caller_seconds"], s["summary"]["io_thread_seconds"]
assert set(c) == {"read", "push", "pull", "write", "flush"} and min(c.values()) >= 0, c
assert set(io) == {"read", "write"} and io["read"] > 0 and io["write"] > 0, io
PY
then ok "edit y4m -> y4m (stats: FPS after the first chunk, peak device memory, I/O times)"; else bad "edit y4m -> y4m"; fi
if "$CONVERT" "$VTEST" "$T/v.rgb" --frames 24 --size 160x96 >"$T/log" 2>&1 \
   && "$LIPAR" edit "$T/v.rgb" -p "a watercolor painting" -o "$T/vo.rgb" $SMALL >>"$T/log" 2>&1 \
   && [ "$(stat -c %s "$T/vo.rgb")" = $((24 * 160 * 96 * 3)) ]; then ok "edit raw rgb24 -> raw rgb24"
else bad "edit rgb -> rgb"; fi
# rgb24 is exact both ways, so the side-by-side view's left and middle thirds
# are the input and edited frames byte for byte, each with its own
if "$LIPAR" edit "$T/v.rgb" -p "a watercolor painting" -o "$T/so.rgb" --side-by-side "$T/ss.rgb" $SMALL \
     >"$T/log" 2>&1 && python3 - "$T/v.rgb" "$T/so.rgb" "$T/ss.rgb" <<'PY' 2>>"$T/log"
import sys
row, h = 160 * 3, 96
v, o, s = (open(p, "rb").read() for p in sys.argv[1:4])
assert len(v) == 24 * row * h and len(o) == len(v) and len(s) == 3 * len(v), (len(v), len(o), len(s))
for y in range(24 * h):
    r = s[3 * row * y:3 * row * (y + 1)]
    assert r[:row] == v[row * y:row * (y + 1)], ("input", y // h, y % h)
    assert r[row:2 * row] == o[row * y:row * (y + 1)], ("edited", y // h, y % h)
PY
then ok "side-by-side of rgb24: the input and edited frames, in order"; else bad "side-by-side of rgb24"; fi
# the demonstration model with its Wan VAE (a narrow one on the small model)
if "$LIPAR" edit "$T/v.y4m" -p "a red car on the road" -o "$T/wan_demo.mp4" --vae wan $SMALL --max-frames 21 \
      --stats "$T/wan_demo.json" >"$T/log" 2>&1 && [ "$(probe "$T/wan_demo.mp4")" = "160,96,16/1,21" ] \
   && grep -q "Wan VAE of dim 8" "$T/wan_demo.json"; then ok "edit with the demonstration model's Wan VAE"
else bad "edit with the demonstration model's Wan VAE: $(tail -n 1 "$T/log")"; fi
expect_error "--demo with weight files" "not with --model or --dit" "$LIPAR" edit "$T/v.y4m" -p x -o "$T/e.mp4" \
    --demo full --dit "$T/none.pt" --quiet
expect_error "--demo of an unknown kind" "small or full" "$LIPAR" edit "$T/v.y4m" -p x -o "$T/e.mp4" --demo big --quiet

# 9. a build without FFmpeg (NOVIDEO=build folder): y4m -> y4m works, at the
#    clip's own size (it does not resize); other files are refused clearly
if [ -n "${NOVIDEO:-}" ]; then
    NV=$PWD/$NOVIDEO/lipar
    if "$NV" edit "$T/v.y4m" -p "a watercolor painting" -o "$T/nv.y4m" $SMALL >"$T/log" 2>&1 \
       && [ "$(probe "$T/nv.y4m")" = "160,96,16/1,24" ]; then ok "VIDEO=0 build: edit y4m -> y4m"
    else bad "VIDEO=0 build: edit y4m -> y4m"; fi
    expect_error "VIDEO=0 build: an .avi input" "only .y4m" "$NV" edit "$VTEST" -p x -o "$T/e.y4m" --quiet
    expect_error "VIDEO=0 build: an .mp4 output" "only .y4m" "$NV" edit "$T/v.y4m" -p x -o "$T/e.mp4" $SMALL
    expect_error "VIDEO=0 build: another size" "not resized" "$NV" edit "$T/v.y4m" -p x -o "$T/e.y4m" --quiet
fi
echo "$pass passed, $fail failed, 0 skipped"
[ "$fail" -eq 0 ]
