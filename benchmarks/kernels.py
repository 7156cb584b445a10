"""Benchmark the fused GRPO kernels against eager torch (TRL-style), torch.compile and Liger.

GPU:      python benchmarks/kernels.py                 (all shapes; writes benchmarks/results/)
CPU test: python benchmarks/kernels.py --dry-run --out-dir /tmp/bench   (tiny shapes, Triton
          interpreter, no torch.compile / Liger; checks the harness, the numbers mean nothing)

Reports forward+backward milliseconds (CUDA events, warmup, median), the extra peak memory of the
step (beyond the inputs), and the fraction of a floor:
  logits input:  bytes that must move = N*V*itemsize (forward reads the logits once)
                 + 2*N*V*itemsize (backward reads them once and writes dlogits once),
                 over a measured device-to-device copy bandwidth (2 * bytes / copy time).
  fused linear:  8*N*H*V FLOPs (forward logits 2NHV, backward recompute 2NHV, dhidden 2NHV,
                 dweight 2NHV) over a measured bf16 matmul rate (8192^3 torch.mm).
fraction = floor_ms / measured_ms (1.0 = at the floor).
"""

from __future__ import annotations

import argparse
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
        help="comma list among ours,ours_out_of_place,eager,compile,trl,liger",
    )
    p.add_argument(
        "--out-dir",
        default=None,
        help="where kernels-<device>.json/.md go (default benchmarks/results; "
        "nothing is written in --dry-run unless given)",
    )
    return p.parse_args(argv)


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
    from reasoner_kernels import grpo_loss, selective_logp

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
    floor_ms = 3 * N * V * base.element_size() / (args.bandwidth_gbps * 1e9) * 1e3

    def fresh():
        return (base.detach().clone().requires_grad_(),)

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
        row = Row("logits", shape, method, floor_ms=floor_ms)
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
        row = Row("fused_linear", shape, method, floor_ms=floor_ms)
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
        "ours,ours_out_of_place,eager,trl"
        if args.dry_run
        else "ours,ours_out_of_place,eager,compile,trl,liger"
    )
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
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
    rows: list[Row] = []
    if args.only in (None, "logits"):
        for N, V in DRY_LOGITS_SHAPES if args.dry_run else LOGITS_SHAPES:
            new = logits_rows(N, V, device, dtype, methods, args)
            rows += new
            print(markdown_table([asdict(r) for r in new]), flush=True)
    if args.only in (None, "fused_linear"):
        for N, H, V in DRY_FUSED_SHAPES if args.dry_run else FUSED_SHAPES:
            new = fused_rows(N, H, V, device, dtype, methods, args)
            rows += new
            print(markdown_table([asdict(r) for r in new]), flush=True)
    out_dir = args.out_dir or (None if args.dry_run else RESULTS)
    if out_dir:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        command = None if argv is None else " ".join(["python benchmarks/kernels.py", *argv])
        write_results(
            f"kernels-{slug}",
            [asdict(r) for r in rows],
            packages=("torch", "triton", "liger-kernel", "trl"),
            extra={
                "dry_run": args.dry_run,
                "copy_bandwidth_gbps": args.bandwidth_gbps,
                "matmul_tflops": args.matmul_tflops,
            },
            notes=f"{head}\n\n{__doc__}",
            out_dir=out_dir,
            title="Kernel benchmark",
            device_name=name,
            command=command,
        )
    else:
        print(markdown_table([asdict(r) for r in rows]))
    return 0

if __name__ == "__main__":
    sys.exit(main())
