"""A step's rollout batch on the training device, and the helpers that cut and join it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Batch:
    """One step's rollout batch (N = groups * G completions), on the training device."""

    prompt_ids: torch.Tensor  # [N, P] left padded
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor  # [N, C] right padded
    completion_mask: torch.Tensor  # [N, C] tokens through the first EOS
    texts: list[str]
    truncated: torch.Tensor  # [N] bool
    rows: list[dict[str, Any]]  # the dataset row of each completion
    prompts: list[str]  # the prompt text of each completion
    per_func: list[list[float | None]]  # one list of N rewards per reward function
    # the accuracy reward's N values when it is scored for the logs only (not one of the
    # rewards: `accuracy_monitor`), else None
    monitored: list[float | None] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def _pad_to(x: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    extra = width - x.shape[1]
    if extra <= 0:
        return x
    pad = torch.full((x.shape[0], extra), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def cat_batches(parts: list[Batch], pad_id: int) -> Batch:
    """Concatenate batches whose prompts / completions have different padded widths."""
    if len(parts) == 1:
        return parts[0]
    p = max(b.prompt_ids.shape[1] for b in parts)
    c = max(b.completion_ids.shape[1] for b in parts)
    return Batch(
        prompt_ids=torch.cat([_pad_to(b.prompt_ids, p, pad_id, True) for b in parts]),
        prompt_mask=torch.cat([_pad_to(b.prompt_mask, p, 0, True) for b in parts]),
        completion_ids=torch.cat([_pad_to(b.completion_ids, c, pad_id, False) for b in parts]),
        completion_mask=torch.cat([_pad_to(b.completion_mask, c, 0, False) for b in parts]),
        texts=[t for b in parts for t in b.texts],
        truncated=torch.cat([b.truncated for b in parts]),
        rows=[r for b in parts for r in b.rows],
        prompts=[q for b in parts for q in b.prompts],
        per_func=[[v for b in parts for v in b.per_func[k]] for k in range(len(parts[0].per_func))],
        monitored=(None if parts[0].monitored is None
                   else [v for b in parts for v in b.monitored or []]),
    )


def select_groups(b: Batch, groups: list[int], g: int) -> Batch:
    """The groups (of g rows each) with the given indices, in that order."""
    idx = [gi * g + j for gi in groups for j in range(g)]
    t = torch.tensor(idx, dtype=torch.long, device=b.prompt_ids.device)
    return Batch(
        prompt_ids=b.prompt_ids[t], prompt_mask=b.prompt_mask[t],
        completion_ids=b.completion_ids[t], completion_mask=b.completion_mask[t],
        texts=[b.texts[i] for i in idx], truncated=b.truncated[t],
        rows=[b.rows[i] for i in idx], prompts=[b.prompts[i] for i in idx],
        per_func=[[f[i] for i in idx] for f in b.per_func],
        monitored=None if b.monitored is None else [b.monitored[i] for i in idx],
    )


@dataclass
class RowTensors:
    """The model inputs of some rows of a Batch, with all-padding columns trimmed."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    width: int  # completion columns kept


def take_rows(b: Batch, idx: torch.Tensor) -> RowTensors:
    """Rows `idx` of `b`, without the columns that are padding in every one of them."""
    pm = b.prompt_mask[idx]
    cm = b.completion_mask[idx]
    p = max(int(pm.sum(1).max()), 1) if idx.numel() else 1
    c = max(int(cm.sum(1).max()), 1) if idx.numel() else 1
    return RowTensors(b.prompt_ids[idx][:, -p:], pm[:, -p:], b.completion_ids[idx][:, :c],
                      cm[:, :c], c)
