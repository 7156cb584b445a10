"""Compile every Triton kernel for a CUDA target without a GPU (ptxas ships with triton).

The CPU tests run the kernels under the interpreter, which accepts some programs the compiler
rejects; this catches those on a machine with no GPU:

    python -m reasoner_kernels.compile_check --arch 90 --dtype bf16

Must run without TRITON_INTERPRET=1 (the kernels would be interpreter objects).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from dataclasses import dataclass

DATA_PTRS = {"logits_ptr", "dlogits_ptr", "h_ptr", "w_ptr", "b_ptr", "dl_ptr", "a_ptr"}
TYPED_PTRS = {"ids_ptr": "*i64", "mask_ptr": "*i8", "flags_ptr": "*i8", "c_ptr": "*fp32"}
FLOATS = {"temperature", "lo", "hi", "delta", "dual", "beta"}


@dataclass
class CompileResult:
    kernel: str
    ok: bool
    shared_bytes: int = 0
    error: str = ""


def _signature(fn, dtype: str, constexprs: dict) -> dict[str, str]:
    sig = {}
    for name in inspect.signature(fn).parameters:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in DATA_PTRS:
            sig[name] = f"*{dtype}"
        elif name in TYPED_PTRS:
            sig[name] = TYPED_PTRS[name]
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
        elif name in FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = "i64" if name.startswith("stride") or name == "n_start" else "i32"
    return sig


def _divisibility(fn, sig: dict[str, str]) -> dict:
    """tt.divisibility = 16 where the runtime specializes it at the benchmark shapes: every pointer
    (torch allocations are 256-byte aligned) and the strides, V and H (all multiples of 16 there).
    Without it loads would compile as scalar 2-byte accesses that nothing can pipeline."""
    names = list(inspect.signature(fn).parameters)
    return {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(names)
        if sig[name] != "constexpr"
        and (sig[name].startswith("*") or "stride" in name or name in ("V", "H", "M", "N", "K"))
    }


def kernel_variants(dtype: str) -> list[tuple[str, object, dict, dict]]:
    """(name, kernel, constexprs, launch options) covering every constexpr branch, with the
    launch parameters tuning.py gives the benchmark shapes (V = 151936, H = 4096)."""
    import torch

    from . import triton_fused_linear as fl
    from . import triton_logits as lg
    from .tuning import fused_linear_launch, logits_launch

    tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    lgl = logits_launch(151936, tdtype)
    row = dict(BLOCK_V=lgl.block_v, NUM_STAGES=lgl.num_stages)
    row_opts = dict(num_warps=lgl.num_warps)
    fll = fused_linear_launch(151936, 4096, tdtype)
    tiles = dict(BLOCK_N=fll.block_n, BLOCK_V=fll.block_v, BLOCK_K=fll.block_k)
    tile_opts = dict(num_warps=fll.num_warps, num_stages=fll.num_stages)
    # fmt: off
    dot = dict(DOT_PREC="tf32", UPCAST=False)
    # Integer arguments equal to 1 are constexprs at run time (Triton specializes them): the unit
    # strides of the contiguous hidden / weight rows and of the dweight GEMM's operands.
    unit_k = dict(stride_hk=1, stride_wk=1)
    out = []
    for kl in (1, 2, 3):
        for ent in (False, True):
            loss = dict(LOSS=True, HAS_OLD=kl != 1, HAS_DELTA=kl == 3, HAS_DUAL=kl != 2,
                        HAS_REF=kl != 2, KL=kl, BIAS_KL=kl == 3)
            out.append((f"logits_fwd[k{kl}, entropy={ent}]", lg._logits_fwd_kernel,
                        dict(**loss, ENTROPY=ent, CLAMP=20.0, GRAD=False, **row), row_opts))
    for ent in (False, True):
        out.append((f"logits_fwd[fused fwd+bwd, entropy={ent}]", lg._logits_fwd_kernel,
                    dict(LOSS=True, HAS_OLD=True, HAS_DELTA=ent, HAS_DUAL=not ent, HAS_REF=True,
                         KL=3, BIAS_KL=ent, ENTROPY=ent, CLAMP=20.0, GRAD=True, **row),
                    row_opts))
    out.append(("logits_fwd[logprobs only]", lg._logits_fwd_kernel,
                dict(LOSS=False, HAS_OLD=False, HAS_DELTA=False, HAS_DUAL=False, HAS_REF=False,
                     KL=3, BIAS_KL=False, ENTROPY=True, CLAMP=20.0, GRAD=False, **row),
                row_opts))
    out.append(("logits_bwd", lg._logits_bwd_kernel, dict(**row), row_opts))
    piped = dict(row, NUM_STAGES=max(2, lgl.num_stages))  # cp.async double buffering
    out.append((f"logits_fwd[fused fwd+bwd, {piped['NUM_STAGES']} stages]", lg._logits_fwd_kernel,
                dict(LOSS=True, HAS_OLD=True, HAS_DELTA=True, HAS_DUAL=False, HAS_REF=True, KL=3,
                     BIAS_KL=True, ENTROPY=True, CLAMP=20.0, GRAD=True, **piped), row_opts))
    out.append((f"logits_bwd[{piped['NUM_STAGES']} stages]", lg._logits_bwd_kernel, piped,
                row_opts))
    for bias, ent in ((True, True), (False, False)):
        out.append((f"fl_fwd[bias={bias}, entropy={ent}]", fl._fl_fwd_kernel,
                    dict(HAS_BIAS=bias, ENTROPY=ent, **dot, **tiles, **unit_k), tile_opts))
    for kl in (1, 2, 3):
        out.append((f"fl_epilogue[k{kl}]", fl._fl_epilogue_kernel,
                    dict(LOSS=True, HAS_OLD=True, HAS_DELTA=kl == 1, HAS_DUAL=kl != 2,
                         HAS_REF=True, KL=kl, BIAS_KL=kl != 1, ENTROPY=kl == 3, CLAMP=20.0,
                         BLOCK_N=256), {}))
    out.append(("fl_epilogue[logprobs only]", fl._fl_epilogue_kernel,
                dict(LOSS=False, HAS_OLD=False, HAS_DELTA=False, HAS_DUAL=False, HAS_REF=False,
                     KL=3, BIAS_KL=False, ENTROPY=False, CLAMP=20.0, BLOCK_N=256), {}))
    out.append(("fl_dlogits", fl._fl_dlogits_kernel,
                dict(HAS_BIAS=True, **dot, **tiles, **unit_k), tile_opts))
    bm, bn, bk = fl.GEMM_BLOCKS
    if dtype == "fp32":
        bk = 32
    for acc in (False, True):  # dweight (+)= dlogits.T @ hidden: a = dlogits.T is column-major
        out.append((f"matmul[accumulate={acc}]", fl._matmul_kernel,
                    dict(ACCUMULATE=acc, **dot, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                         GROUP_M=fl.GEMM_GROUP, stride_am=1, stride_bn=1, stride_cn=1),
                    dict(num_warps=8, num_stages=2 if dtype == "fp32" else 3)))
    # fmt: on
    return out


def compile_all(arch: int = 90, dtype: str = "bf16") -> list[CompileResult]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    results = []
    for name, kernel, constexprs, opts in kernel_variants(dtype):
        try:
            sig = _signature(kernel.fn, dtype, constexprs)
            src = ASTSource(kernel, sig, constexprs, _divisibility(kernel.fn, sig))
            compiled = triton.compile(src, target=target, options=opts)
            results.append(CompileResult(name, True, int(compiled.metadata.shared)))
        except Exception as e:  # noqa: BLE001 - report every kernel, then fail
            results.append(CompileResult(name, False, error=f"{type(e).__name__}: {e}"))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (80, 90, ...)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the compile check needs the real compiler", file=sys.stderr)
        return 2
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    results = compile_all(args.arch, args.dtype)
    for r in results:
        status = f"ok   shared={r.shared_bytes:>6d} B" if r.ok else f"FAIL {r.error[:2000]}"
        print(f"sm_{args.arch} {args.dtype:4s} {r.kernel:36s} {status}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
