"""Held-out evaluation: accuracy, unbiased pass@k, completion length, format rate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from reasoner.data import render_prompt
from reasoner.rollout import generate_rollouts
from reasoner.verifiers.format import strict_format_ok
from reasoner.verifiers.rewards import get_reward


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _resolve_task(task: Any) -> Any:
    if isinstance(task, str):
        from reasoner.tasks import get_task

        return get_task(task)
    return task


@torch.no_grad()
def evaluate(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    task: Any,
    template: str = "r1_short",
    num_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    k_values: Sequence[int] = (1,),
    seed: int = 0,
    system_prompt: str | None = None,
    keep_samples: int = 0,
) -> dict[str, Any]:
    """Score `num_samples` completions per row with the task's accuracy reward.

    `task`: a Task (or a task name) whose `accuracy_reward` names the reward function.
    temperature 0 is greedy decoding. `batch_size` is the number of sequences generated at once.
    Returns accuracy (mean reward over judged samples), pass@k for each k <= num_samples,
    mean_length (completion tokens incl. EOS), format_rate, truncated_rate, n_rows, unjudged,
    and `keep_samples` example {question, completion, reward} records under "samples".
    """
    if not rows:
        raise ValueError("no rows to evaluate")
    task = _resolve_task(task)
    reward_fn = get_reward(task.accuracy_reward)
    per_call = max(1, batch_size // num_samples)
    rewards: list[float | None] = []
    lengths: list[int] = []
    formats: list[bool] = []
    truncs: list[bool] = []
    samples: list[dict[str, Any]] = []
    for start in range(0, len(rows), per_call):
        chunk = rows[start : start + per_call]
        prompts = [render_prompt(r["question"], template=template, tokenizer=tokenizer,
                                 system_prompt=system_prompt) for r in chunk]
        ro = generate_rollouts(
            model, tokenizer, prompts, num_generations=num_samples,
            max_completion_length=max_new_tokens, temperature=temperature,
            do_sample=temperature > 0, generator_seed=seed + start,
        )
        rep_prompts = [p for p in prompts for _ in range(num_samples)]
        columns = {
            k: [r.get(k) for r in chunk for _ in range(num_samples)]
            for k in {k for r in chunk for k in r}
        }
        rs = reward_fn(rep_prompts, ro.completion_texts, **columns)
        rewards.extend(rs)
        lengths.extend(ro.completion_lengths.tolist())
        formats.extend(strict_format_ok(t) for t in ro.completion_texts)
        truncs.extend(ro.truncated.tolist())
        for i, text in enumerate(ro.completion_texts):
            if len(samples) < keep_samples:
                samples.append({"question": chunk[i // num_samples]["question"],
                                "completion": text, "reward": rs[i]})
    judged = [r for r in rewards if r is not None]
    result: dict[str, Any] = {
        "accuracy": sum(judged) / len(judged) if judged else float("nan"),
        "mean_length": sum(lengths) / len(lengths),
        "format_rate": sum(formats) / len(formats),
        "truncated_rate": sum(truncs) / len(truncs),
        "n_rows": len(rows),
        "num_samples": num_samples,
        "unjudged": len(rewards) - len(judged),
    }
    for k in k_values:
        if k > num_samples:
            raise ValueError(f"pass@{k} needs num_samples >= {k} (got {num_samples})")
        vals = []
        for i in range(len(rows)):
            group = rewards[i * num_samples : (i + 1) * num_samples]
            if any(g is None for g in group):
                continue
            vals.append(pass_at_k(num_samples, sum(1 for g in group if g >= 1.0), k))
        result[f"pass@{k}"] = sum(vals) / len(vals) if vals else float("nan")
    if keep_samples:
        result["samples"] = samples
    return result


def eval_main(
    *, model: str, task: str, split: str = "test", n: int = 200, task_options: dict[str, Any],
    num_samples: int = 1, temperature: float = 0.0, max_new_tokens: int = 64, batch_size: int = 64,
    k_values: Sequence[int] = (1,), seed: int = 0, template: str = "r1_short", show: int = 0,
) -> dict[str, Any]:
    """`reasoner eval`: load a local model and evaluate it on `n` rows of a task split."""
    from reasoner.models import load_model_and_tokenizer
    from reasoner.tasks import get_task

    t = get_task(task, **task_options)
    m, tok = load_model_and_tokenizer(model)
    rows = t.rows(split, n, seed)
    return evaluate(m, tok, rows, task=t, template=template, num_samples=num_samples,
                    temperature=temperature, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, k_values=tuple(k_values), seed=seed, keep_samples=show)
