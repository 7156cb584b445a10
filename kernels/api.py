"""Public API of the fused GRPO kernels: validation, backend choice, reshaping.

`backend="auto"` runs the Triton kernels on CUDA tensors and the pure-torch references otherwise;
`backend="triton"` forces Triton (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1);
`backend="torch"` forces the reference (the semantic definition, see reference.py).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch

from .reference import (
    KL_ESTIMATORS,
    GRPOTokenOutput,
    check_clip_args,
    fused_linear_grpo_loss_reference,
    grpo_loss_reference,
    selective_logp,
    token_entropy,
)

BACKENDS = ("auto", "triton", "torch")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class TokenLogProbs:
    """Output of the no-grad log-prob passes; both of the token shape (ids.shape), fp32."""

    logp: torch.Tensor
    entropy: torch.Tensor | None


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def use_triton(backend: str, x: torch.Tensor) -> bool:
    """Resolve `backend` for tensor `x` (raises a clear error when Triton cannot run it)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    if backend == "auto":
        return x.is_cuda and triton_available()
    if not triton_available():
        raise RuntimeError("backend='triton' needs the `triton` package (pip install triton)")
    if not x.is_cuda and not _interpreting():
        raise RuntimeError(
            "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before importing triton"
        )
    if x.dtype not in KERNEL_DTYPES:
        raise ValueError(f"Triton kernels take float32/bfloat16/float16 inputs, got {x.dtype}")
    return True


def _loss_config(
    temperature: float,
    eps_low: float,
    eps_high: float | None,
    delta: float | None,
    dual_clip: float | None,
    beta: float,
    kl_estimator: str,
    use_bias_correction_kl: bool,
    ref_logp: torch.Tensor | None,
) -> dict:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if eps_low < 0 or (eps_high is not None and eps_high < 0):
        raise ValueError(f"eps_low / eps_high must be >= 0, got {eps_low} / {eps_high}")
    check_clip_args(delta, dual_clip)
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError("beta != 0 needs ref_logp")
    return dict(
        temperature=float(temperature),
        eps_low=float(eps_low),
        eps_high=float(eps_low if eps_high is None else eps_high),
        delta=None if delta is None else float(delta),
        dual_clip=None if dual_clip is None else float(dual_clip),
        beta=float(beta),
        kl_estimator=kl_estimator,
        use_bias_correction_kl=bool(use_bias_correction_kl),
    )


def _check_ids(ids: torch.Tensor, token_shape: torch.Size, V: int, what: str) -> torch.Tensor:
    if ids.shape != token_shape:
        raise ValueError(
            f"ids must have shape {tuple(token_shape)} ({what}), got {tuple(ids.shape)}"
        )
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"ids must be int32/int64, got {ids.dtype}")
    flat = ids.reshape(-1).contiguous()
    # One small reduction (and a device sync): an out-of-range id would read out of bounds.
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= V):
        raise ValueError(
            f"ids must lie in [0, {V}) (the vocabulary), got [{int(flat.min())}, {int(flat.max())}]"
        )
    return flat


def _flat_tokens(
    token_shape: torch.Size,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    def flat(name: str, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        if t.shape != token_shape:
            raise ValueError(
                f"{name} must have the token shape {tuple(token_shape)}, got {tuple(t.shape)}"
            )
        return t.detach().reshape(-1).float().contiguous()

    adv = _broadcast_tokens("advantages", advantages, token_shape)
    msk = _broadcast_tokens("mask", mask, token_shape)
    return (
        flat("old_logp", old_logp),
        flat("ref_logp", ref_logp),
        adv.reshape(-1).float().contiguous(),
        msk.reshape(-1).bool().to(torch.int8).contiguous(),
    )


def _unflatten(loss, logp, kl, flags, entropy, token_shape, has_ref: bool, with_entropy: bool):
    def r(t):
        return t.reshape(token_shape)

    # flags: bool [N, 4] (clipped_low, clipped_high, clipped_dual, clipped_delta)
    return GRPOTokenOutput(
        loss=r(loss),
        logp=r(logp),
        kl=r(kl) if has_ref else None,
        clipped_low=r(flags[:, 0]),
        clipped_high=r(flags[:, 1]),
        clipped_dual=r(flags[:, 2]),
        clipped_delta=r(flags[:, 3]),
        entropy=r(entropy) if with_entropy else None,
    )


def _logits_and_ids(logits: torch.Tensor, ids: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Size, torch.Tensor]:
    """The logits-input kernels' checks: logits [N, V] or [B, T, V] with a unit-stride
    vocabulary, ids of the token shape inside the vocabulary; (logits, token shape, flat ids)."""
    if logits.dim() not in (2, 3):
        raise ValueError(f"logits must be [N, V] or [B, T, V], got shape {tuple(logits.shape)}")
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    token_shape = logits.shape[:-1]
    return logits, token_shape, _check_ids(ids, token_shape, logits.shape[-1],
                                           "logits.shape[:-1]")


# ---------------------------------------------------------------------------------------------
# Logits input


def grpo_loss(
    logits: torch.Tensor,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    delta: float | None = None,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    use_bias_correction_kl: bool = False,
    compute_entropy: bool = False,
    inplace_backward: bool = False,
    backend: str = "auto",
    block_v: int | None = None,
) -> GRPOTokenOutput:
    """Per-token GRPO loss from logits [N, V] or [B, T, V]; see kernels/README.md.

    loss, logp and kl are differentiable w.r.t. logits; entropy and the flags are not.
    With inplace_backward=True the backward writes dlogits into the logits buffer (Triton only).
    """
    kw = _loss_config(
        temperature, eps_low, eps_high, delta, dual_clip, beta, kl_estimator,
        use_bias_correction_kl, ref_logp,
    )
    if not use_triton(backend, logits):
        return grpo_loss_reference(
            logits, ids, old_logp, ref_logp, advantages, mask, compute_entropy=compute_entropy, **kw
        )
    from .triton_logits import GRPOLogitsFunction, LossConfig

    logits, token_shape, flat_ids = _logits_and_ids(logits, ids)
    old, ref, adv, msk = _flat_tokens(token_shape, old_logp, ref_logp, advantages, mask)
    cfg = LossConfig(compute_entropy=compute_entropy, **kw)
    loss, logp, kl, flags, entropy = GRPOLogitsFunction.apply(
        logits, flat_ids, old, ref, adv, msk, cfg, inplace_backward, block_v
    )
    return _unflatten(loss, logp, kl, flags, entropy, token_shape, ref is not None, compute_entropy)


@dataclass
class WeightedGRPOOutput:
    """Output of `weighted_grpo_loss`."""

    loss: torch.Tensor  # 0-dim fp32: sum(weights * per-token loss), differentiable
    tokens: GRPOTokenOutput  # the per-token values, detached (no gradient flows through them)


def weighted_grpo_loss(
    logits: torch.Tensor,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    *,
    temperature: float = 1.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    delta: float | None = None,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    use_bias_correction_kl: bool = False,
    compute_entropy: bool = False,
    inplace: bool = False,
    backend: str = "auto",
    block_v: int | None = None,
) -> WeightedGRPOOutput:
    """sum(weights * per-token GRPO loss) from logits, in the fused forward+backward mode.

    When the per-token loss weights are known before backward (the aggregation of grpo / bnpo /
    dr_grpo / dapo is a fixed weight per token: mask / normaliser), the Triton kernel computes
    dlogits in the forward pass while each row is still in L2: about 2 N V bytes of memory
    traffic instead of 3. `weights` broadcasts to the token shape like `advantages`. Only `loss`
    is differentiable; backward multiplies the stored dlogits by the upstream scalar (skipped
    when it is exactly 1) and can run once.

    With `inplace=True` dlogits is written INTO the logits buffer during this call: afterwards the
    logits tensor holds gradients; its version counter is bumped, so an autograd node that saved
    it fails at backward instead of reading them (pass a non-leaf, e.g. the lm_head output).
    """
    kw = _loss_config(
        temperature, eps_low, eps_high, delta, dual_clip, beta, kl_estimator,
        use_bias_correction_kl, ref_logp,
    )
    if not use_triton(backend, logits):
        out = grpo_loss_reference(
            logits, ids, old_logp, ref_logp, advantages, mask, compute_entropy=compute_entropy, **kw
        )
        total = (out.loss * _broadcast_tokens("weights", weights, out.loss.shape)).sum()
        return WeightedGRPOOutput(total, _detached(out))
    from .triton_logits import LossConfig, WeightedGRPOLogitsFunction

    logits, token_shape, flat_ids = _logits_and_ids(logits, ids)
    old, ref, adv, msk = _flat_tokens(token_shape, old_logp, ref_logp, advantages, mask)
    wts = _broadcast_tokens("weights", weights, token_shape).reshape(-1).float().contiguous()
    cfg = LossConfig(compute_entropy=compute_entropy, **kw)
    total, loss, logp, kl, flags, entropy = WeightedGRPOLogitsFunction.apply(
        logits, flat_ids, old, ref, adv, msk, wts, cfg, inplace, block_v
    )
    tokens = _unflatten(
        loss, logp, kl, flags, entropy, token_shape, ref is not None, compute_entropy
    )
    return WeightedGRPOOutput(total, tokens)


def _broadcast_tokens(name: str, t: torch.Tensor, token_shape: torch.Size) -> torch.Tensor:
    try:
        return torch.broadcast_to(t.detach(), token_shape)
    except RuntimeError as e:
        raise ValueError(f"{name} must broadcast to the token shape {tuple(token_shape)}: {e}") from None


def _detached(out: GRPOTokenOutput) -> GRPOTokenOutput:
    def d(t):
        return None if t is None else t.detach()

    return GRPOTokenOutput(
        d(out.loss), d(out.logp), d(out.kl), out.clipped_low, out.clipped_high,
        out.clipped_dual, out.clipped_delta, d(out.entropy),
    )


@torch.no_grad()
def logprobs(
    logits: torch.Tensor,
    ids: torch.Tensor,
    temperature: float = 1.0,
    compute_entropy: bool = False,
    *,
    backend: str = "auto",
    block_v: int | None = None,
) -> TokenLogProbs:
    """No-grad log_softmax(logits / T)[ids] (and entropy) for the old / reference passes."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not use_triton(backend, logits):
        return TokenLogProbs(
            selective_logp(logits, ids, temperature),
            token_entropy(logits, temperature) if compute_entropy else None,
        )
    from .triton_logits import LossConfig, logits_forward

    logits, token_shape, flat_ids = _logits_and_ids(logits, ids)
    cfg = LossConfig(temperature=float(temperature), compute_entropy=compute_entropy)
    out = logits_forward(
        logits, flat_ids, None, None, None, None, cfg, with_loss=False, block_v=block_v
    )
    ent = out.entropy.reshape(token_shape) if out.entropy is not None else None
    return TokenLogProbs(out.logp.reshape(token_shape), ent)


# ---------------------------------------------------------------------------------------------
# Fused linear (hidden states + lm_head weight input)


def _check_linear(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if hidden.dim() not in (2, 3):
        raise ValueError(f"hidden must be [N, H] or [B, T, H], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must be [V, H] with H = {hidden.shape[-1]}, got "
            f"{tuple(weight.shape)} (under ZeRO-3 pass the gathered weight)"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [V] = [{weight.shape[0]}], got {tuple(bias.shape)}")
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise ValueError(
            f"hidden, weight and bias must share a dtype, got {hidden.dtype}, "
            f"{weight.dtype}, {None if bias is None else bias.dtype}"
        )


def fused_linear_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    delta: float | None = None,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    use_bias_correction_kl: bool = False,
    compute_entropy: bool = False,
    chunk_size: int | None = None,
    backend: str = "auto",
    blocks: tuple[int, int, int] | None = None,
) -> GRPOTokenOutput:
    """Per-token GRPO loss from hidden [N, H] / [B, T, H] and lm_head weight [V, H] (+ bias [V]).

    The N x V logits are never stored: forward tiles them through SRAM; backward recomputes them
    `chunk_size` rows at a time. The weight is read from the argument on every call (never
    cached), so a ZeRO-3-gathered weight works; see kernels/README.md.
    """
    kw = _loss_config(
        temperature, eps_low, eps_high, delta, dual_clip, beta, kl_estimator,
        use_bias_correction_kl, ref_logp,
    )
    _check_linear(hidden, weight, bias)
    if not use_triton(backend, hidden):
        return fused_linear_grpo_loss_reference(
            hidden,
            weight,
            ids,
            old_logp,
            ref_logp,
            advantages,
            mask,
            bias=bias,
            compute_entropy=compute_entropy,
            **kw,
        )
    from .triton_fused_linear import FusedLinearConfig, FusedLinearGRPOFunction
    from .triton_logits import LossConfig

    token_shape = hidden.shape[:-1]
    flat_ids = _check_ids(ids, token_shape, weight.shape[0], "hidden.shape[:-1]")
    old, ref, adv, msk = _flat_tokens(token_shape, old_logp, ref_logp, advantages, mask)
    cfg = FusedLinearConfig(
        LossConfig(compute_entropy=compute_entropy, **kw), chunk_size=chunk_size, blocks=blocks
    )
    h2 = hidden.reshape(-1, hidden.shape[-1])
    loss, logp, kl, flags, entropy = FusedLinearGRPOFunction.apply(
        h2, weight, bias, flat_ids, old, ref, adv, msk, cfg
    )
    return _unflatten(loss, logp, kl, flags, entropy, token_shape, ref is not None, compute_entropy)


@torch.no_grad()
def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ids: torch.Tensor,
    temperature: float = 1.0,
    compute_entropy: bool = False,
    *,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    blocks: tuple[int, int, int] | None = None,
) -> TokenLogProbs:
    """No-grad log-probs (and entropy) of ids under softmax((hidden @ weight.T + bias) / T)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _check_linear(hidden, weight, bias)
    if not use_triton(backend, hidden):
        logits = hidden @ weight.t()
        if bias is not None:
            logits = logits + bias
        return TokenLogProbs(
            selective_logp(logits, ids, temperature),
            token_entropy(logits, temperature) if compute_entropy else None,
        )
    from .triton_fused_linear import FusedLinearConfig, fused_linear_forward
    from .triton_logits import LossConfig

    token_shape = hidden.shape[:-1]
    flat_ids = _check_ids(ids, token_shape, weight.shape[0], "hidden.shape[:-1]")
    cfg = FusedLinearConfig(
        LossConfig(temperature=float(temperature), compute_entropy=compute_entropy), blocks=blocks
    )
    out = fused_linear_forward(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        bias,
        flat_ids,
        None,
        None,
        None,
        None,
        cfg,
        with_loss=False,
    )
    ent = out.entropy.reshape(token_shape) if out.entropy is not None else None
    return TokenLogProbs(out.logp.reshape(token_shape), ent)
