"""Training with FIXED rollouts, for comparing a multi-rank DeepSpeed step with a one-process step.

Every process builds the same global batch from a seed (random prompts, completions of varied
lengths, rewards; one group with equal rewards, so its rows are skipped and the ranks run
different numbers of micro-batches) and trains on its own slice of whole groups, the slice a
rank's own rollouts would be. Used in-process by tests/test_deepspeed.py (one process, plain
engine) and as a script under torchrun (several ranks, --deepspeed):

    torchrun --nproc_per_node 2 tests/dist_worker.py OUT_DIR DS_CONFIG [overrides...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from reasoner.config import Config, load_config
from reasoner.trainers import ALGORITHMS
from reasoner.trainers.batch import Batch
from reasoner.trainers.grpo import GRPOTrainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
GLOBAL_PROMPTS = 4  # groups in the global batch
G = 4


def global_batch(vocab: int, pad_id: int, seed: int = 1234) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    n, p, c = GLOBAL_PROMPTS * G, 6, 10
    prompt_ids = torch.full((n, p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, p), dtype=torch.long)
    completion_ids = torch.full((n, c), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((n, c), dtype=torch.long)
    rewards = []
    for gi in range(GLOBAL_PROMPTS):
        plen = 3 + gi % 4  # left padding differs between groups
        prompt = torch.randint(1, vocab, (plen,), generator=gen)
        for j in range(G):
            i = gi * G + j
            prompt_ids[i, p - plen:] = prompt
            prompt_mask[i, p - plen:] = 1
            clen = int(torch.randint(2, c + 1, (1,), generator=gen))
            completion_ids[i, :clen] = torch.randint(1, vocab, (clen,), generator=gen)
            completion_mask[i, :clen] = 1
            # group 1 has equal rewards (zero std, zero advantage: its rows are skipped)
            rewards.append(0.5 if gi == 1 else float(torch.rand((), generator=gen)))
    return Batch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
        completion_mask=completion_mask, texts=[f"c{i}" for i in range(n)],
        truncated=completion_mask[:, -1].bool(),
        rows=[{"question": f"q{i // G}", "answer": "0"} for i in range(n)],
        prompts=[f"q{i // G}" for i in range(n)],
        per_func=[rewards, [0.0] * n],
    )


def fixed_trainer(cfg: Config, deepspeed_config: Any = None) -> GRPOTrainer:
    """A trainer (``algo.name``'s: GRPO, PPO, ...) whose every step trains on its rank's slice
    of `global_batch`. With the environment variable POISON_FIRST_STEP=1 the last rank's loss is
    NaN in step 1 (so every rank must skip that update)."""
    trainer = ALGORITHMS.get(cfg.algo.name)(cfg, deepspeed_config=deepspeed_config,
                                            progress=False)
    full = global_batch(trainer.model.config.vocab_size, trainer.tokenizer.pad_token_id)
    per_rank = len(full) // trainer.world
    lo, hi = trainer.rank * per_rank, (trainer.rank + 1) * per_rank
    mine = Batch(
        prompt_ids=full.prompt_ids[lo:hi], prompt_mask=full.prompt_mask[lo:hi],
        completion_ids=full.completion_ids[lo:hi], completion_mask=full.completion_mask[lo:hi],
        texts=full.texts[lo:hi], truncated=full.truncated[lo:hi], rows=full.rows[lo:hi],
        prompts=full.prompts[lo:hi], per_func=[f[lo:hi] for f in full.per_func],
    )
    trainer.collect = lambda timer: (mine, {"dynamic_sampling/tries": 0.0})  # type: ignore[method-assign]
    if os.environ.get("POISON_FIRST_STEP") == "1":
        loss_micro = trainer.micro_batch_loss

        def poisoned(*args: Any, **kwargs: Any) -> Any:
            out = loss_micro(*args, **kwargs)
            if trainer.step == 0 and trainer.rank == trainer.world - 1:
                out.loss = out.loss * float("nan")
            return out

        trainer.micro_batch_loss = poisoned  # type: ignore[method-assign]
    return trainer


def fixed_config(out: str | Path, world: int, *overrides: str) -> Config:
    # the global batch is GLOBAL_PROMPTS groups: each of `world` ranks takes GLOBAL_PROMPTS/world
    per_rank = GLOBAL_PROMPTS * G // world
    return load_config(TINY, [
        f"train.output_dir={out}", "train.max_steps=2", "train.save_steps=0",
        f"rollout.num_generations={G}", "train.per_device_train_batch_size=2",
        f"train.gradient_accumulation_steps={per_rank // 2}", "rollout.max_completion_length=10",
        "train.report_to_tensorboard=false", "train.log_completions_steps=0",
        "train.learning_rate=0.01", *overrides])


def main(argv: list[str]) -> None:
    from reasoner import distributed

    out, ds_config, *overrides = argv
    cfg = fixed_config(out, distributed.launched_world_size(), *overrides)
    fixed_trainer(cfg, ds_config).train()


if __name__ == "__main__":
    main(sys.argv[1:])
