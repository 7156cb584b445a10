"""Held-out evaluation: accuracy, unbiased pass@k, completion length, format rate; on a task's
split or a dataset, with the reward functions and the template default of training."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

from reasoner.data import default_template, render_prompt
from reasoner.rollout import generate_rollouts
from reasoner.tasks.base import SPLITS
from reasoner.verifiers.format import strict_format_ok
from reasoner.verifiers.rewards import (
    WeightedReward,
    accuracy_monitor,
    accuracy_reward_name,
    get_reward,
    score_completions,
)


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
    task: Any = None,
    reward_funcs: Sequence[WeightedReward] | None = None,
    accuracy_reward: str | None = None,
    template: str | None = None,
    num_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    k_values: Sequence[int] = (1,),
    seed: int = 0,
    system_prompt: str | None = None,
    keep_samples: int = 0,
) -> dict[str, Any]:
    """Score `num_samples` completions per row with the run's reward functions.

    `task`: a Task (or a task name) or None (a dataset). `reward_funcs`: the functions, as
    training resolves them (`reasoner.verifiers.rewards.run_rewards`); default: the task's
    accuracy reward alone. `accuracy_reward`: the function whose value is the accuracy, scored
    beside them if it is not one of them (default: `accuracy_reward_name`'s: the task's, else
    the first). `template`: None = training's default (the task's,
    r1_zero for a dataset). temperature 0 is greedy decoding. `batch_size` is the number of
    sequences generated at once.
    Returns accuracy (mean of the accuracy reward over judged samples), pass@k for each
    k <= num_samples (a sample counts as right at reward >= 1), ``rewards/<name>`` means when
    there are several functions, mean_length (completion tokens incl. EOS), format_rate,
    truncated_rate, n_rows, unjudged, and `keep_samples` example {question, completion,
    reward} records under "samples".
    """
    if not rows:
        raise ValueError("no rows to evaluate")
    for k in k_values:
        if k > num_samples:
            raise ValueError(f"pass@{k} needs num_samples >= {k} (got {num_samples})")
    task = _resolve_task(task)
    if reward_funcs is None:
        if task is None:
            raise ValueError("evaluate needs a task or reward functions")
        reward_funcs = [WeightedReward(task.accuracy_reward, get_reward(task.accuracy_reward))]
    accuracy_reward = accuracy_reward or accuracy_reward_name(None, task, reward_funcs)
    if accuracy_reward is None:
        raise ValueError("no accuracy reward: the only reward holds a model; name a rule-based "
                         "one (rewards.accuracy_reward)")
    # the accuracy reward is scored (for the accuracy) even when it is not one of the run's
    monitor = accuracy_monitor(reward_funcs, accuracy_reward)
    reward_funcs = list(reward_funcs) + ([] if monitor is None else [monitor])
    names = [f.name for f in reward_funcs]
    template = template or default_template(task)
    per_call = max(1, batch_size // num_samples)
    per_func: list[list[float | None]] = [[] for _ in reward_funcs]
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
        rep_rows = [r for r in chunk for _ in range(num_samples)]
        scored = score_completions(reward_funcs, rep_prompts, ro.completion_texts, rep_rows)
        for acc, vals in zip(per_func, scored):
            acc.extend(vals)
        lengths.extend(ro.completion_lengths.tolist())
        formats.extend(strict_format_ok(t) for t in ro.completion_texts)
        truncs.extend(ro.truncated.tolist())
        rs = scored[names.index(accuracy_reward)]
        for i, text in enumerate(ro.completion_texts):
            if len(samples) < keep_samples:
                samples.append({"question": chunk[i // num_samples]["question"],
                                "completion": text, "reward": rs[i]})
    rewards = per_func[names.index(accuracy_reward)]
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
        vals = []
        for i in range(len(rows)):
            group = rewards[i * num_samples : (i + 1) * num_samples]
            if any(g is None for g in group):
                continue
            vals.append(pass_at_k(num_samples, sum(1 for g in group if g >= 1.0), k))
        result[f"pass@{k}"] = sum(vals) / len(vals) if vals else float("nan")
    if len(reward_funcs) > 1:
        for name, vals in zip(names, per_func):
            got = [v for v in vals if v is not None]
            result[f"rewards/{name}"] = sum(got) / len(got) if got else float("nan")
    if keep_samples:
        result["samples"] = samples
    return result


def eval_main(
    *, model: str, task: str | None = None, task_options: dict[str, Any] | None = None,
    dataset: str | None = None, column_map: dict[str, str] | None = None,
    rewards: Sequence[str] | None = None, template: str | None = None,
    overrides: Sequence[str] = (), config: str | None = None,
    split: str | None = None, n: int = 200, num_samples: int = 1, temperature: float = 0.0,
    max_new_tokens: int = 64, batch_size: int = 64, k_values: Sequence[int] = (1,),
    seed: int = 0, show: int = 0,
) -> dict[str, Any]:
    """`reasoner eval`: load a local model and evaluate it on `n` rows of what the ``data`` and
    ``rewards`` config sections describe (a training config file, dotted overrides, and the
    shortcuts: `task` / `task_options` = data.task / data.task_options, `dataset` =
    data.dataset_path with data.task null, `column_map`, `rewards` = rewards.names, `template`;
    validated as for training): a task's split ("test" by default), or the first `n` rows of
    a dataset (its column map, ``data.split`` or `split`), judged by the same reward functions
    as training, prompted with the same template default. Mistakes are ConfigErrors naming the
    field."""
    import json

    from reasoner.config import ConfigError, load_config
    from reasoner.data import load_training_data
    from reasoner.models import load_model_and_tokenizer
    from reasoner.models.loading import check_context, check_model_dir
    from reasoner.verifiers.rewards import RewardContext, run_rewards

    overrides = list(overrides)
    if task is not None:
        overrides += [f"data.task={json.dumps(task)}", "data.dataset_path=null"]
    if dataset is not None:
        overrides += ["data.task=null", f"data.dataset_path={json.dumps(dataset)}"]
    for key, value in (task_options or {}).items():
        overrides.append(f"data.task_options.{key}={json.dumps(value)}")
    for ours, theirs in (column_map or {}).items():
        overrides.append(f"data.column_map.{ours}={json.dumps(theirs)}")
    if rewards:
        overrides.append(f"rewards.names={json.dumps(list(rewards))}")
    if template is not None:
        overrides.append(f"data.template={json.dumps(template)}")
    cfg = load_config(config, overrides)
    check_model_dir(model, "--model")
    d = cfg.data
    setup = load_training_data(d, rows=[])  # the task (or None) and the template
    if setup.task is not None:
        split = split or "test"
        if split not in SPLITS:
            raise ConfigError(f"--split {split!r}: a task's splits are {', '.join(SPLITS)}")
        try:
            rows = setup.task.rows(split, n, seed)
        except ValueError as e:  # a task too small for the rows asked for
            raise ConfigError(f"--n {n}: {e}") from None
    else:
        if split is not None:
            d.split = split
        rows = load_training_data(d).rows[:n]
    if cfg.rewards.reward_model_normalize:
        # normalized by running moments that only the training run had: eval reports the raw
        # score (normalized by a fresh run's moments it would read 0 with one batch)
        cfg.rewards.reward_model_normalize = False
        print("rewards.reward_model_normalize: eval reports the reward model's raw score",
              file=sys.stderr)
    try:  # a learned reward (reward_model) loads here, on the device the model runs on
        funcs, accuracy = run_rewards(cfg.rewards, setup.task,
                                      context=RewardContext(cfg, torch.device("cpu")))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    m, tok = load_model_and_tokenizer(model)
    try:
        prompts = [render_prompt(r["question"], template=setup.template, tokenizer=tok,
                                 system_prompt=d.system_prompt) for r in rows]
    except ValueError as e:
        raise ConfigError(f"data.template={setup.template}: {e}") from None
    longest = max(len(x) for x in tok(prompts, add_special_tokens=False)["input_ids"])
    check_context(m.config, longest, max_new_tokens, new_tokens_field="--max-new-tokens",
                  prompt_field=None)
    return evaluate(m, tok, rows, task=setup.task, reward_funcs=funcs, accuracy_reward=accuracy,
                    template=setup.template, num_samples=num_samples, temperature=temperature,
                    max_new_tokens=max_new_tokens, batch_size=batch_size,
                    k_values=tuple(k_values), seed=seed, system_prompt=d.system_prompt,
                    keep_samples=show)
