"""`reasoner preferences`: rank K completions sampled from a policy with the synthetic annotator.

    reasoner preferences --policy DIR --task arithmetic --k 4 --n 2000 --output prefs.jsonl

For `n` rows of the task's split, K completions are sampled from the policy; the distinct ones
are scored with the annotator's hidden utility and ranked with its Bradley–Terry noise
(`reasoner.preferences.annotator`). A row whose K samples hold fewer than two distinct
completions is sampled again (up to `max_resamples` times), then left out and counted. The
records are rankings (``prompt``, ``completions`` best first, plus ``utilities`` and
``noise_temperature`` for the Bayes-optimal accuracy), or the same judgements written as TRL
pairs or a/b/winner comparisons (`--format`).

`on_samples` sees every first draw (a `SampleChunk`: the rollout, its rows and the utilities)
before any row is sampled again, so a caller can measure the policy on exactly the samples that
were ranked (the RLHF demo's reward-model score and KL to the warm start).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.preferences.annotator import SyntheticAnnotator
from reasoner.preferences.formats import FORMATS


@dataclass
class SampledPreferences:
    """What `sample_preferences` wrote."""

    records: int  # rankings (lines for the rankings format)
    lines: int
    left_out: int  # rows whose samples never held two distinct completions
    bayes_accuracy: float  # closed form, over the pairs written
    true_score: float  # mean utility of every sample drawn (duplicates included)
    seconds: float


@dataclass
class SampleChunk:
    """One batch of first draws: K completions for each of its rows (row g's are rollout rows
    g*K .. g*K+K-1), with the prompt of each completion and the annotator's utility of each."""

    rows: list[dict[str, Any]]  # one per completion
    prompts: list[str]  # one per completion
    rollout: Any  # reasoner.rollout.Rollout
    utilities: list[float]


def _ranking_lines(prompt: str, row: dict[str, Any], texts: list[str], u: list[float],
                   order: list[int], ann: SyntheticAnnotator, fmt: str) -> list[dict[str, Any]]:
    best = [texts[k] for k in order]
    ub = [u[k] for k in order]
    extra = {"question": row.get("question"), "answer": row.get("answer")}
    if fmt == "rankings":
        return [{"prompt": prompt, "completions": best, "utilities": ub,
                 "noise_temperature": ann.noise_temperature, **extra}]
    out = []
    for a in range(len(best)):
        for b in range(a + 1, len(best)):
            if fmt == "pairs":
                out.append({"prompt": prompt, "chosen": best[a], "rejected": best[b],
                            "utilities": [ub[a], ub[b]],
                            "noise_temperature": ann.noise_temperature, **extra})
            else:  # comparisons: a random side for the winner
                flip = (a * 7 + b * 13 + len(prompt)) % 2 == 1
                x, y = (b, a) if flip else (a, b)
                out.append({"prompt": prompt, "a": best[x], "b": best[y],
                            "winner": "b" if flip else "a", **extra})
    return out


def sample_preferences(
    policy: str | Path, task_name: str, *, k: int, n: int, output: str | Path,
    task_options: dict[str, Any] | None = None, split: str = "train", fmt: str = "rankings",
    annotator: SyntheticAnnotator | None = None, temperature: float = 1.0,
    max_new_tokens: int = 32, template: str | None = None, batch_size: int = 64, seed: int = 0,
    max_resamples: int = 3, progress: bool = True,
    on_samples: Callable[[SampleChunk], None] | None = None,
) -> SampledPreferences:
    """Sample, judge and write preference records; see the module docstring. `on_samples` is
    called with each batch of first draws (`SampleChunk`)."""
    import torch

    from reasoner.data import render_prompt
    from reasoner.models import load_model_and_tokenizer
    from reasoner.models.loading import check_context
    from reasoner.rollout import generate_rollouts
    from reasoner.tasks import get_task

    if k < 2:
        raise ValueError(f"--k must be >= 2 (a ranking needs two completions), got {k}")
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"--temperature must be a finite number > 0 (greedy decoding gives K "
                         f"identical samples), got {temperature}")
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    out_path = Path(output)
    if out_path.is_dir():
        raise ValueError(f"--output {str(out_path)!r} is a folder; give a file (prefs.jsonl)")
    ann = annotator or SyntheticAnnotator()
    task = get_task(task_name, **(task_options or {}))
    template = template or task.default_template
    model, tok = load_model_and_tokenizer(policy)
    rows = task.rows(split, n, seed)
    rendered = [render_prompt(r["question"], template=template, tokenizer=tok)
                for r in rows]
    longest = max(len(ids) for ids in tok(rendered, add_special_tokens=False)["input_ids"])
    check_context(model.config, longest, max_new_tokens, new_tokens_field="--max-new-tokens",
                  prompt_field=None)
    rng = random.Random(f"annotator:{seed}")
    t0 = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # written beside the output and renamed at the end: a failed or killed run leaves an
    # earlier file as it was, never a truncated one that reads as complete
    tmp_path = out_path.with_name(f".{out_path.name}.partial")
    pairs_u: list[tuple[float, float]] = []
    all_u: list[float] = []
    n_records = n_lines = left_out = 0
    pending = list(range(len(rows)))
    try:
        with tmp_path.open("w", encoding="utf-8") as f:
            for attempt in range(max_resamples + 1):
                retry: list[int] = []
                for start in range(0, len(pending), batch_size):
                    chunk = pending[start:start + batch_size]
                    prompts = [rendered[i] for i in chunk]
                    with torch.no_grad():
                        ro = generate_rollouts(model, tok, prompts, num_generations=k,
                                               max_completion_length=max_new_tokens,
                                               temperature=temperature,
                                               generator_seed=seed * 1_000_003 + attempt * 7919
                                               + chunk[0])
                    texts = ro.completion_texts
                    rep_rows = [rows[i] for i in chunk for _ in range(k)]
                    rep_prompts = [p for p in prompts for _ in range(k)]
                    u = ann.utilities(task, rep_prompts, texts, rep_rows)
                    all_u.extend(u)
                    if on_samples is not None and attempt == 0:
                        on_samples(SampleChunk(rep_rows, rep_prompts, ro, u))
                    for g, i in enumerate(chunk):
                        seen: dict[str, float] = {}
                        for t, ut in zip(texts[g * k:(g + 1) * k], u[g * k:(g + 1) * k]):
                            seen.setdefault(t, ut)
                        if len(seen) < 2:
                            retry.append(i)
                            continue
                        uniq, uu = list(seen), list(seen.values())
                        order = ann.rank(uu, rng)
                        lines = _ranking_lines(prompts[g], rows[i], uniq, uu, order, ann, fmt)
                        for line in lines:
                            f.write(json.dumps(line) + "\n")
                        n_records += 1
                        n_lines += len(lines)
                        pairs_u += [(uu[a], uu[b]) for a in range(len(uu))
                                    for b in range(a + 1, len(uu))]
                    if progress:
                        print(f"preferences: {n_records}/{len(rows)} rankings, "
                              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                pending = retry
                if not pending:
                    break
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    left_out = len(pending)
    if n_records == 0:
        tmp_path.unlink(missing_ok=True)
        raise ValueError(f"no ranking written: none of the {len(rows)} prompts' {k} samples "
                         f"held two distinct completions ({max_resamples} resamples); "
                         f"{str(out_path)!r} is left as it was")
    os.replace(tmp_path, out_path)
    if progress and left_out:
        print(f"preferences: left out {left_out} rows whose {k} samples never held two distinct "
              f"completions ({max_resamples} resamples)", file=sys.stderr)
    return SampledPreferences(n_records, n_lines, left_out, ann.bayes_accuracy(pairs_u),
                              sum(all_u) / len(all_u), time.perf_counter() - t0)
