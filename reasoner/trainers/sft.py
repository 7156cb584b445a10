"""Supervised warm start: fine-tune on prompt + worked solution + EOS, loss on the completion only.

A GRPO run from a random tiny model would never see a reward; a few hundred SFT steps on the
task's worked solutions teach the output format and some of the skill, leaving room for RL.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from reasoner.config import TrainConfig
from reasoner.data import render_prompt
from reasoner.engine import TorchEngine
from reasoner.engine.optim import SCHEDULERS

IGNORE = -100


def tokenize_examples(
    tokenizer: Any, rows: list[dict[str, Any]], *, template: str = "r1_short",
    system_prompt: str | None = None,
) -> list[tuple[list[int], int]]:
    """[(prompt + solution + EOS token ids, prompt length)] for rows with "question" and "solution"."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token")
    out = []
    for i, row in enumerate(rows):
        for col in ("question", "solution"):
            if not isinstance(row.get(col), str):
                raise ValueError(f"row {i} has no {col!r} string (SFT needs question and solution)")
        prompt = render_prompt(row["question"], template=template, tokenizer=tokenizer,
                               system_prompt=system_prompt)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(row["solution"], add_special_tokens=False)["input_ids"]
        out.append((p + c + [tokenizer.eos_token_id], len(p)))
    return out


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask, and labels (IGNORE on prompt and padding)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for i, (ids, plen) in enumerate(examples):
        t = torch.tensor(ids, dtype=torch.long)
        input_ids[i, : len(ids)] = t
        mask[i, : len(ids)] = 1
        labels[i, plen : len(ids)] = t[plen:]
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def completion_loss(
    model: Any, batch: dict[str, torch.Tensor], *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (completion) tokens of the batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   use_cache=False).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
        label_smoothing=label_smoothing,
    )


def run_sft(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    template: str = "r1_short",
    max_steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    system_prompt: str | None = None,
    label_smoothing: float = 0.0,
    lr_scheduler_type: str = "linear",
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` in place on prompt + row["solution"] + EOS (loss on the solution tokens).

    The optimisation is the trainers' own (`reasoner.engine`): AdamW with betas (0.9, 0.95),
    linear warmup over `warmup_ratio` of the steps then `lr_scheduler_type`'s schedule (one of
    `reasoner.engine.optim.SCHEDULERS`, the config's `train.lr_scheduler_type`: "linear" decays
    to 0 at `max_steps`; "constant_with_warmup" keeps `lr` to the end, a deliberately short warm
    start that stops while the model is still learning, as the demo's does), gradient clipping
    at `max_grad_norm` (0 = off); a step whose loss or gradient is not finite is skipped.

    `label_smoothing` > 0 keeps the warm-started policy from becoming over-confident, so that
    sampling at temperature 1 stays exploratory for RL (it also raises the reported loss floor).

    `on_step(n)` is called after the n-th optimizer step (1-based), the model in training mode:
    a caller can save the model part-way through one run (the RLHF demo keeps its policy at one
    step and trains on to a later one for its reward model's backbone).

    Returns {"loss_first", "loss_last" (mean of the last min(10, steps) steps), "lr_last" (the
    learning rate of the last step), "steps", "seconds", "losses"}.
    """
    if max_steps < 1 or batch_size < 1:
        raise ValueError("max_steps and batch_size must be >= 1")
    if not rows:
        raise ValueError("no rows to train on")
    if lr_scheduler_type not in SCHEDULERS:
        raise ValueError(f"lr_scheduler_type must be one of {SCHEDULERS}, "
                         f"got {lr_scheduler_type!r}")
    examples = tokenize_examples(tokenizer, rows, template=template, system_prompt=system_prompt)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(seed)
    settings = TrainConfig(learning_rate=lr, adam_beta1=0.9, adam_beta2=0.95,
                           weight_decay=weight_decay, lr_scheduler_type=lr_scheduler_type,
                           warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
                           max_steps=max_steps, per_device_train_batch_size=batch_size,
                           seed=seed)
    engine = TorchEngine(model, settings, max_steps, device)
    model.train()
    losses: list[float] = []
    order: list[int] = []
    start = time.perf_counter()
    for step in range(max_steps):
        if len(order) < batch_size:
            order += torch.randperm(len(examples), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], pad_id).items()}
        loss = completion_loss(model, batch, label_smoothing=label_smoothing)
        engine.backward(loss)
        res = engine.step(loss_finite=bool(torch.isfinite(loss)))
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1)
        if progress and (step % log_every == 0 or step == max_steps - 1):
            print(f"sft step {step + 1}/{max_steps} loss {losses[-1]:.4f} "
                  f"lr {res.lr:.2e} {time.perf_counter() - start:.1f}s",
                  file=sys.stderr, flush=True)
    model.eval()
    tail = losses[-min(10, len(losses)):]
    return {
        "loss_first": losses[0],
        "loss_last": sum(tail) / len(tail),
        "lr_last": res.lr,
        "steps": max_steps,
        "seconds": time.perf_counter() - start,
        "losses": losses,
    }


def sft_main(
    *, model: str, task: str, output_dir: str, max_steps: int, task_options: dict[str, Any],
    n_train: int = 4000, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
    template: str | None = None, progress: bool = True, label_smoothing: float = 0.0,
    lr_scheduler_type: str = "linear",
) -> dict[str, Any]:
    """`reasoner sft`: fine-tune a local model (or "tiny": a freshly built tiny model) on a task's
    worked solutions and save it, with its tokenizer, in Hugging Face format to `output_dir`.
    `template` None: the task's default, as in training. A bad --model / --task /
    --lr-scheduler-type is a ConfigError naming the option."""
    from pathlib import Path

    from reasoner.config import ConfigError
    from reasoner.data import default_template
    from reasoner.models import build_tiny_model, load_model_and_tokenizer
    from reasoner.models.loading import check_model_dir
    from reasoner.registry import UnknownNameError
    from reasoner.tasks import get_task

    out = Path(output_dir)
    if lr_scheduler_type not in SCHEDULERS:
        raise ConfigError(f"--lr-scheduler-type: {lr_scheduler_type!r} is not one of "
                          f"{list(SCHEDULERS)}")
    try:
        t = get_task(task, **task_options)
    except UnknownNameError as e:
        raise ConfigError(f"--task: {e}") from None
    except ValueError as e:
        raise ConfigError(f"--task-option: {e}") from None
    template = template or default_template(t)
    if model != "tiny":
        check_model_dir(model, "--model")
    src = build_tiny_model(out / "init", seed=seed) if model == "tiny" else Path(model)
    m, tok = load_model_and_tokenizer(src)
    rows = t.rows("train", n_train, seed)
    result = run_sft(m, tok, rows, template=template, max_steps=max_steps, batch_size=batch_size,
                     lr=lr, seed=seed, progress=progress, label_smoothing=label_smoothing,
                     lr_scheduler_type=lr_scheduler_type)
    m.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return result
