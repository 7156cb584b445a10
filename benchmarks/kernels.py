"""Benchmark the fused GRPO kernels against eager torch (TRL-style), torch.compile and Liger.

GPU:      python benchmarks/kernels.py                 (all shapes; writes benchmarks/results/)
          python benchmarks/kernels.py --methods liger --logits-shapes 16384x151936 \
              --fused-shapes none --name kernels-liger --out-dir /tmp/k   (a budgeted subset)
          python benchmarks/kernels.py --merge /tmp/k/*.json --out-dir OUT   (one table of them)
          python benchmarks/kernels.py --sweep       (launch-table candidates; prints entries)
CPU test: python benchmarks/kernels.py --dry-run --out-dir /tmp/bench   (tiny shapes, Triton
          interpreter, no torch.compile / Liger; checks the harness, the numbers mean nothing)

Methods: ours (two-pass, in-place backward), ours_out_of_place, ours_fused (fused
forward+backward, in place; `weighted_grpo_loss`), ours_fused_out_of_place, eager (TRL's
per-sequence log_softmax + clipped loss), compile (torch.compile of eager), trl (TRL's installed
selective_log_softmax), liger (Liger-Kernel's triton_grpo_loss / LigerFusedLinearGRPOLoss; the
row names the installed version, e.g. "liger 0.7.0").

Reports forward+backward milliseconds (CUDA events, warmup, median), the extra peak memory of the
step (beyond the inputs), and the fraction of a floor:
  logits input:  bytes that must move = N*V*itemsize (forward reads the logits once)
                 + 2*N*V*itemsize (backward reads them once and writes dlogits once) = 3NV;
                 2NV for the fused forward+backward mode (one read from HBM, one write),
                 over a measured device-to-device copy bandwidth (2 * bytes / copy time).
  fused linear:  8*N*H*V FLOPs (forward logits 2NHV, backward recompute 2NHV, dhidden 2NHV,
                 dweight 2NHV) over a measured bf16 matmul rate (8192^3 torch.mm).
fraction = floor_ms / measured_ms (1.0 = at the floor). The results are rewritten after every
shape, so a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/<name>.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, git_commit, markdown_table, write_results  # noqa: E402

LOGITS_SHAPES = [(16384, 151936), (8192, 32000), (65536, 151936)]  # (N, V)
FUSED_SHAPES = [(16384, 4096, 151936), (8192, 2048, 32000)]  # (N, H, V)
LOGITS_METHODS = ("ours", "ours_out_of_place", "ours_fused", "ours_fused_out_of_place", "eager",
                  "compile", "trl", "liger")  # fmt: skip
FUSED_METHODS = ("ours", "eager", "compile", "liger")
DRY_LOGITS_SHAPES = [(64, 500)]
DRY_FUSED_SHAPES = [(32, 64, 256)]
SEQ_LEN = 1024  # tokens per sequence: N tokens = N / SEQ_LEN sequences of [T, V] logits
LOSS_KW = dict(temperature=0.9, eps_low=0.2, eps_high=0.28, beta=0.04)


@dataclass
class Row:
    kind: str  # "logits" | "fused_linear"
    shape: str
    method: str
    status: str = "ok"  # ok | skipped: ... | OOM | error: ...
    ms: float | None = None
    peak_mb: float | None = None
    floor_ms: float | None = None
    fraction_of_floor: float | None = None
    loss_diff_vs_eager: float | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny shapes on the CPU under TRITON_INTERPRET=1 (tests the harness)",
    )
    p.add_argument("--only", choices=["logits", "fused_linear"], default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument(
        "--methods",
        default=None,
        help="comma list among " + ",".join(dict.fromkeys(LOGITS_METHODS + FUSED_METHODS)),
    )
    p.add_argument("--logits-shapes", default=None,
                   help="comma list of NxV (or 'none'); default: the standard three")
    p.add_argument("--fused-shapes", default=None,
                   help="comma list of NxHxV (or 'none'); default: the standard two")
    p.add_argument("--name", default=None, help="results file stem (default kernels-<device>)")
    p.add_argument("--sweep", action="store_true",
                   help="time launch-table candidates at V=151936 (bf16) and print the best as "
                   "entries for reasoner_kernels/tuning.py")
    p.add_argument("--sweep-seconds", type=float, default=60.0, help="time box of --sweep")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="merge result files of earlier runs into one table (no GPU needed)")
    p.add_argument(
        "--out-dir",
        default=None,
        help="where kernels-<device>.json/.md go (default benchmarks/results; "
        "nothing is written in --dry-run unless given)",
    )
    return p.parse_args(argv)  # fmt: skip


def parse_shapes(text: str | None, default: list[tuple], dims: int) -> list[tuple]:
    if text is None:
        return default
    if text.strip().lower() in ("", "none"):
        return []
    out = []
    for part in text.split(","):
        vals = tuple(int(v) for v in part.lower().split("x"))
        if len(vals) != dims:
            raise SystemExit(f"shape {part!r} must have {dims} numbers separated by 'x'")
        out.append(vals)
    return out


# ---------------------------------------------------------------------------------------------
# Baselines


def trl_style_logp(logits, ids, temperature):
    """TRL's classic selective_log_softmax: log_softmax one sequence at a time for bf16/fp16."""
    import torch

    logits = logits / temperature
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return picked - torch.stack([torch.logsumexp(row, -1) for row in logits])
    rows = []
    for row_logits, row_ids in zip(logits, ids):
        row_logp = torch.log_softmax(row_logits, dim=-1)
        rows.append(row_logp.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1))
    return torch.stack(rows)


def trl_style_loss(logp, old, ref, adv, mask, eps_low, eps_high, beta):
    """TRL GRPOTrainer's token loss (k3 KL), bnpo-style mean over unmasked tokens."""
    import torch

    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    loss = -torch.min(ratio * adv, clipped * adv)
    d = ref - logp
    loss = loss + beta * (torch.exp(d) - d - 1)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Measurement


def measure_bandwidth_gbps(device: str) -> float:
    import torch

    n = (1 << 28) if device == "cuda" else (1 << 22)  # 1 GiB / 16 MiB of fp32
    x = torch.empty(n, device=device, dtype=torch.float32).fill_(1.0)
    y = torch.empty_like(x)
    times = timed(lambda: y.copy_(x), device, warmup=2, iters=10)
    return 2 * x.numel() * 4 / (statistics.median(times) * 1e-3) / 1e9


def measure_matmul_tflops(device: str) -> float:
    import torch

    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (256, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = timed(lambda: a @ b, device, warmup=2, iters=10)
    return 2 * n**3 / (statistics.median(times) * 1e-3) / 1e12


def timed(
    fn: Callable[[], object],
    device: str,
    warmup: int,
    iters: int,
    setup: Callable[[], tuple] | None = None,
) -> list[float]:
    """Milliseconds of fn(*setup()) per iteration (setup is not timed)."""
    import torch

    out = []
    for i in range(warmup + iters):
        args = setup() if setup else ()
        if device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            fn(*args)
            ms = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            out.append(ms)
        del args
    return out


def run_method(
    step: Callable, setup: Callable[[], tuple], device: str, warmup: int, iters: int
) -> tuple[float, float | None]:
    """(median ms, extra peak MiB of one step beyond its inputs) of step(*setup())."""
    import torch

    times = timed(step, device, warmup, iters, setup)
    peak = None
    if device == "cuda":
        args = setup()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(*args)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        del args
    return statistics.median(times), peak


# ---------------------------------------------------------------------------------------------
# Logits input


def logits_rows(N: int, V: int, device: str, dtype, methods: list[str], args) -> list[Row]:
    import torch
    from reasoner_kernels import grpo_loss, selective_logp, weighted_grpo_loss

    T = min(SEQ_LEN, N)
    B = N // T
    shape = f"N={N} V={V}"
    g = torch.Generator(device=device).manual_seed(0)
    base = torch.randn(B, T, V, device=device, dtype=dtype, generator=g).mul_(2)
    ids = torch.randint(0, V, (B, T), device=device, generator=g)
    with torch.no_grad():
        # one sequence at a time in fp32 (a full fp32 copy of the logits would not fit)
        logp0 = torch.stack(
            [selective_logp(base[i], ids[i], LOSS_KW["temperature"]) for i in range(B)]
        )
    old = logp0 + 0.1 * torch.randn(B, T, device=device, generator=g)
    ref = logp0 + 0.1 * torch.randn(B, T, device=device, generator=g)
    adv = torch.randn(B, 1, device=device, generator=g)
    mask = (torch.rand(B, T, device=device, generator=g) > 0.1).float()
    eps = dict(eps_low=LOSS_KW["eps_low"], eps_high=LOSS_KW["eps_high"], beta=LOSS_KW["beta"])
    temp = LOSS_KW["temperature"]
    nv_ms = N * V * base.element_size() / (args.bandwidth_gbps * 1e9) * 1e3  # one pass over NV
    weights = mask / mask.sum()  # bnpo, as trl_style_loss aggregates

    def fresh():
        return (base.detach().clone().requires_grad_(),)

    def fused(inplace):
        def step(x):
            out = weighted_grpo_loss(
                x, ids, old, ref, adv, mask, weights, temperature=temp, **eps, inplace=inplace,
                backend="triton",
            )  # fmt: skip
            torch.autograd.grad(out.loss, x)
            return out.loss

        return step

    def ours(inplace):
        def step(x):
            out = grpo_loss(
                x,
                ids,
                old,
                ref,
                adv,
                mask,
                temperature=temp,
                **eps,
                inplace_backward=inplace,
                backend="triton",
            )
            loss = (out.loss * mask).sum() / mask.sum()
            torch.autograd.grad(loss, x)
            return loss

        return step

    def eager(x, logp_fn=trl_style_logp):
        loss = trl_style_loss(logp_fn(x, ids, temp), old, ref, adv, mask, **eps)
        torch.autograd.grad(loss, x)
        return loss

    steps: dict[str, Callable[[], tuple[Callable, Callable]]] = {
        "ours": lambda: (ours(True), fresh),
        "ours_out_of_place": lambda: (ours(False), fresh),
        "ours_fused": lambda: (fused(True), fresh),
        "ours_fused_out_of_place": lambda: (fused(False), fresh),
        "eager": lambda: (eager, fresh),
        "compile": lambda: (torch.compile(eager), fresh),
        "trl": lambda: (_trl_step(eager), fresh),
        "liger": lambda: _liger_logits_step(base, ids, old, ref, adv, mask, temp, eps),
    }
    with torch.no_grad():
        ref_loss = float(
            trl_style_loss(trl_style_logp(base, ids, temp), old, ref, adv, mask, **eps)
        )
    rows = []
    for method in methods:
        if method not in steps:
            continue
        floor_ms = (2 if method.startswith("ours_fused") else 3) * nv_ms
        row = Row("logits", shape, _label(method), floor_ms=floor_ms)
        try:
            step, setup = steps[method]()
            diff = abs(float(step(*setup()).detach()) - ref_loss)
            row.ms, row.peak_mb = run_method(step, setup, device, args.warmup, args.iters)
            row.fraction_of_floor = floor_ms / row.ms
            row.loss_diff_vs_eager = diff
        except Exception as e:  # noqa: BLE001 - a failing baseline is a row, not a crash
            row.status = _status(e)
        rows.append(row)
        _cleanup(device)
    return rows


def _trl_step(eager: Callable) -> Callable:
    from trl.trainer.utils import selective_log_softmax

    return lambda x: eager(x, logp_fn=selective_log_softmax)


def _liger_logits_step(base, ids, old, ref, adv, mask, temp, eps):
    import torch
    from liger_kernel.transformers.grpo_loss import triton_grpo_loss

    # Liger reads logits as [B, T + 1, V] (the last position is skipped) and advantages as [B].
    pad = torch.cat([base, base[:, -1:]], dim=1)

    def setup():
        return (pad.detach().clone().requires_grad_(),)

    def step(x):
        out = triton_grpo_loss(
            x,
            old,
            ref,
            ids,
            adv.squeeze(1),
            mask,
            temperature=temp,
            beta=eps["beta"],
            eps_low=eps["eps_low"],
            eps_high=eps["eps_high"],
            inplace=True,
        )
        per_token = out[0] if isinstance(out, tuple) else out
        loss = (per_token * mask).sum() / mask.sum() if per_token.dim() else per_token
        torch.autograd.grad(loss, x)
        return loss

    return step, setup


# ---------------------------------------------------------------------------------------------
# Fused linear


def fused_rows(N: int, H: int, V: int, device: str, dtype, methods: list[str], args) -> list[Row]:
    import torch
    from reasoner_kernels import fused_linear_grpo_loss

    T = min(SEQ_LEN, N)
    B = N // T
    shape = f"N={N} H={H} V={V}"
    g = torch.Generator(device=device).manual_seed(0)
    hidden0 = torch.randn(B, T, H, device=device, dtype=dtype, generator=g)
    weight0 = (torch.randn(V, H, device=device, dtype=dtype, generator=g) / H**0.5).to(dtype)
    ids = torch.randint(0, V, (B, T), device=device, generator=g)
    with torch.no_grad():
        logp0 = fused_linear_logp_chunked(hidden0, weight0, ids, LOSS_KW["temperature"])
    old = logp0 + 0.1 * torch.randn(B, T, device=device, generator=g)
    ref = logp0 + 0.1 * torch.randn(B, T, device=device, generator=g)
    adv = torch.randn(B, 1, device=device, generator=g)
    mask = (torch.rand(B, T, device=device, generator=g) > 0.1).float()
    eps = dict(eps_low=LOSS_KW["eps_low"], eps_high=LOSS_KW["eps_high"], beta=LOSS_KW["beta"])
    temp = LOSS_KW["temperature"]
    floor_ms = 8 * N * H * V / (args.matmul_tflops * 1e12) * 1e3

    hidden = hidden0.clone().requires_grad_()
    weight = weight0.clone().requires_grad_()

    def fresh():
        return (hidden, weight)

    def ours(h, w):
        out = fused_linear_grpo_loss(
            h, w, ids, old, ref, adv, mask, temperature=temp, **eps, backend="triton"
        )
        loss = (out.loss * mask).sum() / mask.sum()
        torch.autograd.grad(loss, (h, w))
        return loss

    def eager(h, w):
        logits = h @ w.t()
        loss = trl_style_loss(trl_style_logp(logits, ids, temp), old, ref, adv, mask, **eps)
        torch.autograd.grad(loss, (h, w))
        return loss

    steps = {
        "ours": lambda: ours,
        "eager": lambda: eager,
        "compile": lambda: torch.compile(eager),
        "liger": lambda: _liger_fused_step(ids, old, ref, adv, mask, temp, eps),
    }
    with torch.no_grad():
        ref_loss = float(
            trl_style_loss(
                fused_linear_logp_chunked(hidden0, weight0, ids, temp), old, ref, adv, mask, **eps
            )
        )
    rows = []
    for method in methods:
        if method not in steps:
            continue
        row = Row("fused_linear", shape, _label(method), floor_ms=floor_ms)
        try:
            step = steps[method]()
            diff = abs(float(step(*fresh()).detach()) - ref_loss)
            row.ms, row.peak_mb = run_method(step, fresh, device, args.warmup, args.iters)
            row.fraction_of_floor = floor_ms / row.ms
            row.loss_diff_vs_eager = diff
        except Exception as e:  # noqa: BLE001
            row.status = _status(e)
        rows.append(row)
        _cleanup(device)
    return rows


def fused_linear_logp_chunked(hidden, weight, ids, temperature, rows: int = 2048):
    import torch

    h = hidden.reshape(-1, hidden.shape[-1])
    out = torch.cat(
        [
            trl_style_logp(
                (h[i : i + rows] @ weight.t()).float()[None],
                ids.reshape(-1)[i : i + rows][None],
                temperature,
            )[0]
            for i in range(0, h.shape[0], rows)
        ]
    )
    return out.reshape(ids.shape)


def _liger_fused_step(ids, old, ref, adv, mask, temp, eps):
    import torch
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    fn = LigerFusedLinearGRPOLoss(
        beta=eps["beta"],
        epsilon_low=eps["eps_low"],
        epsilon_high=eps["eps_high"],
        temperature=temp,
        use_ref_model=True,
        loss_type="bnpo",
    )

    def step(h, w):
        out = fn(h, w, ids, mask, adv.squeeze(1), ref_per_token_logps=ref, old_per_token_logps=old)
        loss = out[0] if isinstance(out, tuple) else out
        torch.autograd.grad(loss, (h, w))
        return loss

    return step


# ---------------------------------------------------------------------------------------------
# Helpers


def _label(method: str) -> str:
    """The row's method name; Liger's carries the installed version (two are compared)."""
    if method != "liger":
        return method
    import importlib.metadata

    try:
        return f"liger {importlib.metadata.version('liger-kernel')}"
    except importlib.metadata.PackageNotFoundError:
        return "liger"


def sweep(args: argparse.Namespace, device: str, dtype) -> list[dict]:
    """Time launch-table candidates (logits: both modes at N x 151936; fused linear at
    N x 4096 x 151936) within args.sweep_seconds; print each, then the best as table entries."""
    import torch
    from reasoner_kernels import fused_linear_grpo_loss, grpo_loss, tuning, weighted_grpo_loss

    deadline = time.monotonic() + args.sweep_seconds
    g = torch.Generator(device=device).manual_seed(0)
    dname = tuning.dtype_name(dtype)
    out: list[dict] = []
    N, V = (8192, 151936) if device == "cuda" else (16, 300)
    x0 = torch.randn(N, V, device=device, dtype=dtype, generator=g)
    ids = torch.randint(0, V, (N,), device=device, generator=g)
    adv = torch.randn(N, device=device, generator=g)
    mask = torch.ones(N, device=device)
    w = mask / N
    nv_ms = N * V * x0.element_size() / (args.bandwidth_gbps * 1e9) * 1e3
    cands = [tuning.LogitsLaunch(bv, nw, ns) for bv in (4096, 8192, 2048)
             for nw, ns in ((8, 2), (16, 2), (8, 3), (4, 2), (8, 1))]  # fmt: skip
    if device != "cuda":
        cands = cands[:2]
    modes = {
        "two-pass": (lambda x: torch.autograd.grad(
            grpo_loss(x, ids, None, None, adv, mask, inplace_backward=True,
                      backend="triton").loss.sum(), x), 3),
        "fused": (lambda x: torch.autograd.grad(
            weighted_grpo_loss(x, ids, None, None, adv, mask, w, inplace=True,
                               backend="triton").loss, x), 2),
    }  # fmt: skip
    key = (V, dname)
    for cand in cands:
        for mode, (step, passes) in modes.items():
            if time.monotonic() > deadline:
                break
            tuning.LOGITS_TABLE[key] = cand
            try:
                ms = statistics.median(timed(step, device, 1, 3 if device == "cuda" else 1,
                                             lambda: (x0.clone().requires_grad_(),)))
                res = dict(kernel="logits", mode=mode, key=key, launch=cand, ms=ms,
                           fraction_of_floor=passes * nv_ms / ms)
            except Exception as e:  # noqa: BLE001 - a failing candidate is a line, not a crash
                res = dict(kernel="logits", mode=mode, key=key, launch=cand, error=_status(e))
            print(res, flush=True)
            out.append(res)
        tuning.LOGITS_TABLE.pop(key, None)
    Nf, H = (8192, 4096) if device == "cuda" else (16, 32)
    h0 = torch.randn(Nf, H, device=device, dtype=dtype, generator=g)
    w0 = (torch.randn(V, H, device=device, dtype=dtype, generator=g) / H**0.5).to(dtype)
    fids = torch.randint(0, V, (Nf,), device=device, generator=g)
    fadv = torch.randn(Nf, device=device, generator=g)
    fmask = torch.ones(Nf, device=device)
    h, wt = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    fl_cands = [tuning.FusedLinearLaunch(*c) for c in ((128, 128, 64, 8, 3), (128, 256, 64, 8, 3),
                (64, 256, 64, 4, 3), (128, 128, 64, 4, 4), (256, 128, 64, 8, 3))]  # fmt: skip
    if device != "cuda":
        fl_cands = [tuning.FusedLinearLaunch(16, 32, 16, 4, 2)]
    fkey = (V, H, dname)
    flops = 8 * Nf * H * V
    for cand in fl_cands:
        if time.monotonic() > deadline:
            break
        tuning.FUSED_LINEAR_TABLE[fkey] = cand
        try:
            ms = statistics.median(timed(lambda: torch.autograd.grad(fused_linear_grpo_loss(
                h, wt, fids, None, None, fadv, fmask, backend="triton").loss.sum(), (h, wt)),
                device, 1, 2 if device == "cuda" else 1))  # fmt: skip
            res = dict(kernel="fused_linear", key=fkey, launch=cand, ms=ms,
                       fraction_of_floor=flops / (args.matmul_tflops * 1e12) * 1e3 / ms)
        except Exception as e:  # noqa: BLE001
            res = dict(kernel="fused_linear", key=fkey, launch=cand, error=_status(e))
        print(res, flush=True)
        out.append(res)
    tuning.FUSED_LINEAR_TABLE.pop(fkey, None)
    best = {}
    for r in out:
        if "ms" in r:
            k = (r["kernel"], r.get("mode"))
            if k not in best or r["ms"] < best[k]["ms"]:
                best[k] = r
    print("# best per kernel / mode (paste into kernels/tuning.py after checking the modes agree):")
    for (kernel, mode), r in best.items():
        table = "LOGITS_TABLE" if kernel == "logits" else "FUSED_LINEAR_TABLE"
        print(f"{table}[{r['key']!r}] = {r['launch']!r}  # {mode or ''} {r['ms']:.3f} ms, "
              f"{r['fraction_of_floor']:.0%} of the floor")
    return [dict(r, launch=str(r["launch"]), key=str(r["key"])) for r in out]


def merge(paths: list[str], out_dir: str | None, name: str | None) -> int:
    """One results file from several runs' JSON files (their rows, versions and floors)."""
    rows, runs = [], []
    for path in paths:
        data = json.loads(Path(path).read_text())
        rows += data["rows"]
        runs.append({k: data.get(k) for k in ("command", "versions", "copy_bandwidth_gbps",
                                              "matmul_tflops", "device", "commit")})
    if not runs:
        return 1
    liger = sorted({r["method"] for r in rows if r["method"].startswith("liger")})
    summary = speedups(rows)
    write_results(
        name or Path(paths[0]).stem.split("__")[0],
        rows,
        packages=("torch", "triton", "liger-kernel", "trl"),
        extra={"runs": runs, "liger_versions": ", ".join(liger) or "none",
               "copy_bandwidth_gbps": runs[0]["copy_bandwidth_gbps"],
               "matmul_tflops": runs[0]["matmul_tflops"], "speedups": summary},
        notes="Merged from: " + ", ".join(Path(p).name for p in paths) + "\n\n"
        + "\n".join(f"- {line}" for line in summary) + f"\n\n{__doc__}",
        out_dir=out_dir, title="Kernel benchmark", device_name=runs[0]["device"],
    )  # fmt: skip
    for line in summary:
        print(line)
    return 0


def speedups(rows: list[dict]) -> list[str]:
    """'shape: ours_x X ms = k.kx liger v' lines for every shape where both ran."""
    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        ok = {r["method"]: r["ms"] for r in rows if r["shape"] == shape and r.get("ms")}
        for base in sorted(m for m in ok if m.startswith("liger") or m == "eager"):
            for mine in ("ours", "ours_fused"):
                if mine in ok:
                    out.append(f"{shape}: {mine} {ok[mine]:.3g} ms = {ok[base] / ok[mine]:.2f}x "
                               f"{base} ({ok[base]:.3g} ms)")  # fmt: skip
    return out


def _status(e: Exception) -> str:
    if isinstance(e, ImportError | ModuleNotFoundError):
        return f"skipped: {e.name or e} not installed"
    if "out of memory" in str(e).lower():
        return "OOM"
    return f"error: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def _cleanup(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out_dir, args.name)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print(
            "no CUDA device: run on a GPU, or use --dry-run to test the harness on the CPU",
            file=sys.stderr,
        )
        return 2
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    default = (
        "ours,ours_out_of_place,ours_fused,ours_fused_out_of_place,eager,trl"
        if args.dry_run
        else "ours,ours_out_of_place,ours_fused,ours_fused_out_of_place,eager,compile,trl,liger"
    )
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    unknown = sorted(set(methods) - set(LOGITS_METHODS) - set(FUSED_METHODS))
    if unknown:
        print(f"unknown methods {unknown}", file=sys.stderr)
        return 2
    if args.dry_run:
        args.warmup, args.iters = min(args.warmup, 1), min(args.iters, 2)
    args.bandwidth_gbps = measure_bandwidth_gbps(device)
    args.matmul_tflops = measure_matmul_tflops(device)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (TRITON_INTERPRET=1)"
    head = (
        f"device: {name}  copy bandwidth {args.bandwidth_gbps:.0f} GB/s  "
        f"matmul {args.matmul_tflops:.1f} TFLOP/s  commit {git_commit()}"
    )
    print(head, flush=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out_dir = args.out_dir or (None if args.dry_run else RESULTS)
    command = None if argv is None else " ".join(["python benchmarks/kernels.py", *argv])
    extra = {"dry_run": args.dry_run, "copy_bandwidth_gbps": args.bandwidth_gbps,
             "matmul_tflops": args.matmul_tflops}  # fmt: skip
    if args.sweep:
        results = sweep(args, device, dtype)
        if out_dir:
            write_results(args.name or f"kernels-sweep-{slug}", results, extra=extra,
                          packages=("torch", "triton"), notes=f"{head}\n\n{sweep.__doc__}",
                          out_dir=out_dir, title="Kernel launch sweep", device_name=name,
                          command=command)  # fmt: skip
        return 0
    logits_shapes = parse_shapes(
        args.logits_shapes, DRY_LOGITS_SHAPES if args.dry_run else LOGITS_SHAPES, 2
    )
    fused_shapes = parse_shapes(
        args.fused_shapes, DRY_FUSED_SHAPES if args.dry_run else FUSED_SHAPES, 3
    )
    rows: list[Row] = []

    def save() -> None:  # after every shape: a run stopped by a time limit keeps what it measured
        if out_dir:
            write_results(
                args.name or f"kernels-{slug}",
                [asdict(r) for r in rows],
                packages=("torch", "triton", "liger-kernel", "trl"),
                extra=extra,
                notes=f"{head}\n\n" + "\n".join(f"- {x}" for x in speedups(
                    [asdict(r) for r in rows])) + f"\n\n{__doc__}",
                out_dir=out_dir,
                title="Kernel benchmark",
                device_name=name,
                command=command,
            )  # fmt: skip

    if args.only in (None, "logits"):
        for N, V in logits_shapes:
            new = logits_rows(N, V, device, dtype, methods, args)
            rows += new
            print(markdown_table([asdict(r) for r in new]), flush=True)
            save()
    if args.only in (None, "fused_linear"):
        for N, H, V in fused_shapes:
            new = fused_rows(N, H, V, device, dtype, methods, args)
            rows += new
            print(markdown_table([asdict(r) for r in new]), flush=True)
            save()
    if not out_dir:
        print(markdown_table([asdict(r) for r in rows]))
    for line in speedups([asdict(r) for r in rows]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
