#!/usr/bin/env python3
"""PyTorch timing reference of lipar's DiT denoising loop (causal Wan DiT, random weights).

Written from spec/MODEL.md and spec/LIPAR.md sections 2-3, not copied from upstream. One chunk =
3 latent frames (12 output frames): 3 denoising steps + 1 context pass (t = 0) that writes the
chunk's K/V into a per-block KV cache of --cache-frames frames (sink --sink + window). With
--keep < 1 the LIPAR pruned forward is emulated: a fixed random set of kept tokens per frame (frame 0
of the video all kept) runs through the blocks, or with --keep-file the keep-masks of a clip (out.keep
[T, h, w] of a lipar_mask safetensors file, frames taken as bench_dit's loop takes them); pruned K/V slots and pruned outputs are filled from
the previous frame by gathers. Achieved TFLOP/s uses lp_dit_flops of src/model/wan_dit.c.
Tiny smoke test: --device cpu --layers 1 --frames 12 --dim 64 --heads 2 --ffn 128 --text-dim 32 --lat 8x12
"""
import argparse, json, statistics, struct, time
from types import SimpleNamespace
import torch
import torch.nn.functional as F

EPS, C, FPC = 1e-6, 16, 3  # norm eps, latent channels, latent frames per chunk


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = ap.add_argument
    a("--frames", type=int, default=96, help="output frames, a multiple of 12")
    a("--layers", type=int, default=30)
    a("--keep", type=float, default=1.0, help="kept token fraction; < 1 emulates LIPAR pruning")
    a("--keep-file", help="LIPAR keep-masks (out.keep [T, h, w] uint8 in a safetensors file) instead of --keep")
    a("--warmup", type=int, default=1, help="chunks not timed")
    a("--compile", action="store_true", help="torch.compile the block computations")
    a("--json", metavar="OUT", help="write the results as JSON")
    a("--device", default="cuda")
    a("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    a("--dim", type=int, default=1536)
    a("--ffn", type=int, default=8960)
    a("--heads", type=int, default=12)
    a("--text-dim", type=int, default=4096)
    a("--text-len", type=int, default=512)
    a("--freq-dim", type=int, default=256)
    a("--lat", default="60x104", help="latent HxW (60x104 = 832x480)")
    a("--cache-frames", type=int, default=7, help="KV cache frames per block, sink included")
    a("--sink", type=int, default=1)
    a("--steps", default="400,300,250")
    a("--shift", type=float, default=5.0)
    a("--seed", type=int, default=0)
    return ap.parse_args()


def L(x, wb):  # Linear with a (weight, bias) pair
    return F.linear(x, wb[0], wb[1])


def rms(x, w):  # RMSNorm over the whole dim, fp32 inside
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * w


def modulate(x, shift, scale, segs):  # LN(x)(no affine)*(1+scale)+shift per frame, fp32 inside
    h = F.layer_norm(x.float(), x.shape[-1:], eps=EPS)
    for f, (a, b) in enumerate(segs):
        h[a:b].mul_(1 + scale[f]).add_(shift[f])
    return h.to(x.dtype)


def gated_add_(x, y, gate, segs):  # x += y * gate, per frame
    for f, (a, b) in enumerate(segs):
        x[a:b].add_(y[a:b] * gate[f])


def rope(x, cos, sin):  # x [N,H,hd]; cos/sin [N,1,hd/2]; pairs (x[2i], x[2i+1]) times e^{i·angle}
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2).to(x.dtype)


def attn_in(x, p, m, segs, cos, sin, heads):  # modulated LN -> q (rotated), k (not rotated), v
    h = modulate(x, m[:, 0], m[:, 1], segs)
    q = rms(L(h, p["q"]), p["nq"]).unflatten(1, (heads, -1))
    k = rms(L(h, p["k"]), p["nk"]).unflatten(1, (heads, -1))
    v = L(h, p["v"]).unflatten(1, (heads, -1))
    return rope(q, cos, sin), k, v


def attn_out(x, o, p, m, segs, ck, cv):  # o-proj + gate, cross-attention, FFN + gate
    gated_add_(x, L(o, p["o"]), m[:, 2], segs)
    h = F.layer_norm(x.float(), x.shape[-1:], p["n3"][0].float(), p["n3"][1].float(), EPS).to(x.dtype)
    q = rms(L(h, p["cq"]), p["cnq"]).unflatten(1, (ck.shape[1], -1)).transpose(0, 1)[None]
    c = F.scaled_dot_product_attention(q, ck, cv)[0].transpose(0, 1).flatten(1)  # [n, D]
    x = x + L(c, p["co"])
    h = modulate(x, m[:, 3], m[:, 4], segs)
    gated_add_(x, L(F.gelu(L(h, p["ffn0"]), approximate="tanh"), p["ffn2"]), m[:, 5], segs)
    return x


def make_weights(a, dev, dt):
    D, Fd = a.dim, a.ffn
    R = lambda *s, std: torch.randn(*s, device=dev, dtype=dt).mul_(std)
    lin = lambda o, i: (R(o, i, std=i ** -0.5), R(o, std=0.02))
    ones = lambda: torch.ones(D, device=dev, dtype=dt)
    W = dict(patch=lin(D, C * 4), te0=lin(D, a.freq_dim), te2=lin(D, D), tp=lin(6 * D, D),
             txt0=lin(D, a.text_dim), txt2=lin(D, D), head=lin(C * 4, D), head_mod=R(1, 2, D, std=D ** -0.5))
    W["blocks"] = [dict({n: lin(D, D) for n in ("q", "k", "v", "o", "cq", "ck", "cv", "co")},
                        ffn0=lin(Fd, D), ffn2=lin(D, Fd), mod=R(1, 6, D, std=D ** -0.5),
                        nq=ones(), nk=ones(), cnq=ones(), cnk=ones(), n3=(ones(), torch.zeros_like(ones())))
                   for _ in range(a.layers)]
    # text context (random) -> text_embedding; cross-attention K/V cached once per prompt
    ctx = L(F.gelu(L(torch.randn(a.text_len, a.text_dim, device=dev, dtype=dt), W["txt0"]), approximate="tanh"),
            W["txt2"])
    kv = lambda t: t.unflatten(1, (a.heads, -1)).transpose(0, 1)[None].contiguous()  # [1,H,T,hd]
    W["ctx_kv"] = [(kv(rms(L(ctx, p["ck"]), p["cnk"])), kv(L(ctx, p["cv"]))) for p in W["blocks"]]
    return W


def time_embed(W, t, nf, freq_dim, dt):  # sinusoid in fp64 (cos first) -> e [nf,D], e0 [nf,6,D]
    half = freq_dim // 2
    dev = W["te0"][0].device
    fr = 10000.0 ** (-torch.arange(half, dtype=torch.float64, device=dev) / half)
    ang = torch.full((nf, 1), float(t), dtype=torch.float64, device=dev) * fr
    e = L(F.silu(L(torch.cat([ang.cos(), ang.sin()], 1).to(dt), W["te0"])), W["te2"])
    return e, L(F.silu(e), W["tp"]).unflatten(1, (6, -1))


def rope_table(hd, f0, nf, h, w, dev):  # cos/sin [nf*h*w, 1, hd/2] at absolute frame f0..
    nh = hd // 6
    parts = [hd // 2 - 2 * nh, nh, nh]  # frame / row / col pairs
    fr = [10000.0 ** (-torch.arange(n, dtype=torch.float64, device=dev) / n) for n in parts]
    grid = torch.meshgrid(torch.arange(f0, f0 + nf, device=dev), torch.arange(h, device=dev),
                          torch.arange(w, device=dev), indexing="ij")
    ang = torch.cat([g.reshape(-1, 1).double() * f for g, f in zip(grid, fr)], 1)
    return ang.cos().float()[:, None], ang.sin().float()[:, None]


def patchify(x):  # [C,F,H,W] -> [F*h*w, C*4], tokens (f,row,col), vector (c,q,r)
    c, nf, H, W = x.shape
    return x.view(c, nf, H // 2, 2, W // 2, 2).permute(1, 2, 4, 0, 3, 5).reshape(-1, c * 4)


def unpatchify(t, nf, H, W, head_layout):  # inverse; the head's vector is (q,r,c), the input's (c,q,r)
    if head_layout:
        return t.view(nf, H // 2, W // 2, 2, 2, -1).permute(5, 0, 1, 3, 2, 4).reshape(-1, nf, H, W)
    return t.view(nf, H // 2, W // 2, -1, 2, 2).permute(3, 0, 1, 4, 2, 5).reshape(-1, nf, H, W)


def random_mask(keep, hw, first, gen):  # [FPC, hw] bool: n random kept tokens per frame
    n = max(1, min(hw, round(keep * hw)))
    m = torch.zeros(FPC, hw, dtype=torch.bool)
    for f in range(FPC):
        m[f, torch.randperm(hw, generator=gen)[:n]] = True
    if first:
        m[0] = True  # frame 0 of the video: all kept
    return m


def file_masks(path, chunks, hw):  # per chunk [FPC, hw] bool from out.keep, as bench_dit's loop_mask reads it
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        meta = json.loads(fh.read(n))["out.keep"]
        T, h, w = meta["shape"]
        assert meta["dtype"] == "U8" and h * w == hw and T >= 2, f"{path}: out.keep does not fit {hw} tokens"
        fh.seek(8 + n + meta["data_offsets"][0])
        keep = torch.frombuffer(bytearray(fh.read(T * hw)), dtype=torch.uint8).view(T, hw) != 0
    frames = [torch.ones(hw, dtype=torch.bool) if t == 0 else keep[1 + (t - 1) % (T - 1)]
              for t in range(chunks * FPC)]  # frame 0 all kept, then the file's frames 1.. in turn
    return [torch.stack(frames[c * FPC:(c + 1) * FPC]) for c in range(chunks)]


def make_plan(m, dev):  # kept tokens and the chain map of a chunk with mask m [FPC, hw]
    hw = m.shape[1]
    flat = m.reshape(-1)
    rank = flat.long().cumsum(0) - 1  # row of each kept token in the kept list
    prev, chain = torch.arange(hw), []
    for f in range(FPC):  # rows of cat([previous frame (hw rows), kept (n rows)]); pruned -> previous frame
        prev = torch.where(m[f], hw + rank.view(FPC, hw)[f], prev)
        chain.append(prev)
    cnt = m.sum(1).tolist()
    segs = [(sum(cnt[:f]), sum(cnt[:f + 1])) for f in range(FPC)]
    return flat.nonzero().squeeze(1).to(dev), torch.cat(chain).to(dev), segs


class Cache:  # per-block K/V [H, cache_frames*hw, hd]; rolling eviction after the sink
    def __init__(s, a, hw, dev, dt):
        hd, cap = a.dim // a.heads, a.cache_frames * hw
        s.k = [torch.zeros(a.heads, cap, hd, device=dev, dtype=dt) for _ in range(a.layers)]
        s.v = [torch.zeros_like(t) for t in s.k]
        s.hw, s.frames, s.sink, s.held = hw, a.cache_frames, a.sink, 0

    def start_chunk(s, nf):  # returns (first slot, end of valid keys) in tokens
        if s.held + nf > s.frames:
            ev = s.held + nf - s.frames
            move, hw, a = s.held - ev - s.sink, s.hw, s.sink * s.hw
            if move > 0:
                for buf in s.k + s.v:
                    buf[:, a:a + move * hw] = buf[:, a + ev * hw:a + (ev + move) * hw].clone()
            s.held -= ev
        s.held += nf
        return (s.held - nf) * s.hw, s.held * s.hw


def self_attention(S, li, q, k, v):  # writes this call's K/V into the cache, attends over its valid range
    K, V, a, hw = S.cache.k[li], S.cache.v[li], S.slot, S.hw
    if not S.pruned:
        K[:, a:a + k.shape[0]] = S.fn.rope(k, S.cos_q, S.sin_q).transpose(0, 1)
        V[:, a:a + v.shape[0]] = v.transpose(0, 1)
    elif S.ctx:  # context pass: rebuild the chunk's full clean K/V (chain from the previous frame), rotate all
        k = torch.cat([S.prev_k[li], k])[S.chain]
        v = torch.cat([S.prev_v[li], v])[S.chain]
        S.prev_k[li], S.prev_v[li] = k[-hw:].clone(), v[-hw:].clone()  # un-rotated last frame
        K[:, a:a + k.shape[0]] = S.fn.rope(k, S.cos, S.sin).transpose(0, 1)
        V[:, a:a + v.shape[0]] = v.transpose(0, 1)
    else:  # denoising step: once per chunk pre-fill with the previous clean last frame, then scatter kept
        if S.prefill:
            n_all = S.cos.shape[0]
            K[:, a:a + n_all] = S.fn.rope(S.prev_k[li].repeat(FPC, 1, 1), S.cos, S.sin).transpose(0, 1)
            V[:, a:a + n_all] = S.prev_v[li].repeat(FPC, 1, 1).transpose(0, 1)
        K[:, S.kslot] = S.fn.rope(k, S.cos_q, S.sin_q).transpose(0, 1)
        V[:, S.kslot] = v.transpose(0, 1)
    o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], K[None, :, :S.end], V[None, :, :S.end])
    return o[0].transpose(0, 1).flatten(1)  # [n, D]


def flops(a, n, lk):  # lp_dit_flops (src/model/wan_dit.c)
    D, Fd = a.dim, a.ffn
    blk = 2 * n * D * D * 4 + 2 * n * D * D * 2 + 2 * n * D * Fd * 2 + 4 * n * lk * D + 4 * n * a.text_len * D
    return blk * a.layers + 2 * n * D * (C * 4) * 2


def forward(a, W, S, x, t):  # one DiT call on the chunk x [C,F,H,W] -> (v, x restored), both fp32
    nf, H, Wd = x.shape[1:]
    tok = patchify(x)
    restore = S.pruned and not S.ctx
    if restore:  # x_t at pruned positions <- previous frame (chain)
        tok = torch.cat([S.prev_x, tok[S.kidx]])[S.chain]
    tin = tok[S.kidx] if S.pruned else tok
    S.flops += flops(a, tin.shape[0], S.end)
    e, e0 = time_embed(W, t, nf, a.freq_dim, S.dt)
    h = L(tin.to(S.dt), W["patch"])
    for li, p in enumerate(W["blocks"]):
        m = p["mod"].float() + e0.float()  # [F,6,D]
        q, k, v = S.fn.attn_in(h, p, m, S.segs, S.cos_q, S.sin_q, a.heads)
        h = S.fn.attn_out(h, self_attention(S, li, q, k, v), p, m, S.segs, *W["ctx_kv"][li])
    hm = W["head_mod"].float() + e.float()[:, None]  # [F,2,D]: shift, scale
    out = L(modulate(h, hm[:, 0], hm[:, 1], S.segs), W["head"]).float()  # [n, 64], (q,r,c)
    if S.ctx:
        return None, None  # context pass: output discarded
    if restore:  # v at pruned positions <- previous frame (chain)
        out = torch.cat([S.prev_o, out])[S.chain]
        if S.last:
            S.prev_x, S.prev_o = tok[-S.hw:].clone(), out[-S.hw:].clone()
    return unpatchify(out, nf, H, Wd, True), unpatchify(tok, nf, H, Wd, False)


def main():
    a = parse_args()
    dev = torch.device(a.device)
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    H, Wd = map(int, a.lat.lower().split("x"))
    hw, hd = (H // 2) * (Wd // 2), a.dim // a.heads
    assert a.frames % (4 * FPC) == 0 and a.dim % a.heads == 0 and hd % 2 == 0 and H % 2 == 0 and Wd % 2 == 0
    assert a.cache_frames >= a.sink + FPC
    chunks = a.frames // 4 // FPC
    if a.compile:
        a.warmup = max(a.warmup, 3)  # chunks 0, 1, 2 have distinct cache shapes: compile outside timing
    a.warmup = min(a.warmup, chunks - 1)
    torch.manual_seed(a.seed)
    steps = [int(s) for s in a.steps.split(",")]
    u = torch.linspace(1, 0, 1001, dtype=torch.float32)[:-1]
    sig_all = a.shift * u / (1 + (a.shift - 1) * u)
    sig = [float(sig_all[1000 - n]) for n in steps]
    ts = [float(1000 * sig_all[1000 - n]) for n in steps]
    W = make_weights(a, dev, dt)
    cmp = (lambda f: torch.compile(f, dynamic=False)) if a.compile else (lambda f: f)
    pruned = a.keep < 1.0 or a.keep_file is not None
    gen = torch.Generator().manual_seed(a.seed + 1)
    if a.keep_file:
        masks = file_masks(a.keep_file, chunks, hw)
    elif pruned:
        masks = [random_mask(a.keep, hw, True, gen)] + [random_mask(a.keep, hw, False, gen)] * (chunks - 1)
    plans = [make_plan(m, dev) for m in masks] if pruned else None
    kept = float(sum(m.float().mean() for m in masks[a.warmup:]) / (chunks - a.warmup)) if pruned else 1.0
    full = (torch.arange(FPC * hw, device=dev), None, [(f * hw, (f + 1) * hw) for f in range(FPC)])
    zk = torch.zeros(hw, a.heads, hd, device=dev, dtype=dt)
    zo = torch.zeros(hw, C * 4, device=dev)
    S = SimpleNamespace(pruned=pruned, dt=dt, hw=hw, cache=Cache(a, hw, dev, dt), flops=0.0,
                        fn=SimpleNamespace(attn_in=cmp(attn_in), attn_out=cmp(attn_out), rope=cmp(rope)),
                        prev_k=[zk] * a.layers, prev_v=[zk] * a.layers, prev_x=zo, prev_o=zo)
    src = torch.randn(C, chunks * FPC, H, Wd, device=dev)  # source latents (SDEdit start)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    marks = []
    for ci in range(chunks):
        if ci == a.warmup:
            S.flops = 0.0
        if cuda:
            marks.append(torch.cuda.Event(enable_timing=True))
            marks[-1].record()
        else:
            marks.append(time.perf_counter())
        S.kidx, S.chain, S.segs = (plans[ci] if pruned else full)
        S.slot, S.end = S.cache.start_chunk(FPC)
        S.kslot = S.kidx + S.slot
        S.cos, S.sin = rope_table(hd, ci * FPC, FPC, H // 2, Wd // 2, dev)
        S.cos_q, S.sin_q = (S.cos[S.kidx], S.sin[S.kidx]) if pruned else (S.cos, S.sin)
        x = (1 - sig[0]) * src[:, ci * FPC:(ci + 1) * FPC] + sig[0] * torch.randn(C, FPC, H, Wd, device=dev)
        S.ctx = False
        for i, t in enumerate(ts):
            S.prefill, S.last = pruned and ci > 0 and i == 0, i + 1 == len(ts)
            v, x = forward(a, W, S, x, t)
            x0 = (x.double() - sig[i] * v.double()).float()
            if not S.last:
                x = (1 - sig[i + 1]) * x0 + sig[i + 1] * torch.randn_like(x0)
        S.ctx, S.prefill, S.last = True, False, False
        forward(a, W, S, x0, 0.0)  # context pass: writes clean K/V, output discarded
    if cuda:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        torch.cuda.synchronize()
        marks.append(end)
        ms = [marks[i].elapsed_time(marks[i + 1]) for i in range(chunks)]
    else:
        marks.append(time.perf_counter())
        ms = [1e3 * (marks[i + 1] - marks[i]) for i in range(chunks)]
    timed = ms[a.warmup:]
    sec = sum(timed) / 1e3
    res = dict(device=torch.cuda.get_device_name(dev) if cuda else str(dev), dtype=a.dtype, torch=torch.__version__,
               layers=a.layers, dim=a.dim, keep=a.keep, keep_file=a.keep_file, kept=kept, frames=a.frames, lat=a.lat, cache_frames=a.cache_frames,
               sink=a.sink, compile=a.compile, chunks_timed=len(timed), warmup=a.warmup,
               fps=4 * FPC * len(timed) / sec, ms_per_chunk_median=statistics.median(timed),
               ms_per_chunk=[round(m, 3) for m in ms], tflop_per_chunk=S.flops / len(timed) / 1e12,
               tflops=S.flops / sec / 1e12,
               max_mem_gb=torch.cuda.max_memory_allocated(dev) / 1e9 if cuda else None,
               x0_finite=bool(torch.isfinite(x0).all()))
    print(json.dumps(res))
    print(f"torch_ref: {res['device']} {a.dtype} layers={a.layers} kept={kept:.3f}"
          + (f" ({a.keep_file})" if a.keep_file else "") + f" cache={a.cache_frames}f: "
          f"{res['fps']:.2f} FPS (DiT loop), {res['ms_per_chunk_median']:.1f} ms/chunk median over {len(timed)}, "
          f"{res['tflops']:.1f} TFLOP/s achieved"
          + (f", peak {res['max_mem_gb']:.2f} GB" if cuda else ""))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
