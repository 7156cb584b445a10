"""Preference data: TRL's pairs, rankings, and raw pairwise comparisons, read into one record.

Three line formats (JSONL; one may mix them, a line's keys say which it is):

- **pairs** (TRL's preference format): ``prompt`` (optional: TRL's implicit prompt), ``chosen``,
  ``rejected`` and an optional ``margin``; plain text or conversational (lists of
  ``{"role", "content"}`` messages).
- **rankings**: ``prompt`` and ``completions`` ordered best first; an element that is a list is a
  group of tied completions (``["best", ["tie a", "tie b"], "worst"]``). A ranking of K
  completions gives all K(K-1)/2 pairs (pairs inside a tie group are ties).
- **comparisons**: ``prompt``, ``a``, ``b``, ``winner`` (``"a"`` | ``"b"`` | ``"tie"``) and an
  optional ``margin``; the comparisons of one prompt become ONE record whose distinct
  completions are each listed (and so encoded) once.

Every line becomes (or joins) a `PreferenceRecord`: the prompt, its distinct completions, and
the comparisons between them as index pairs. A reward model encodes each completion of a record
once and scores every pair from those scores (InstructGPT's way with rankings).

Records written by the synthetic annotator (`reasoner.preferences.annotator`) also carry
``utilities`` (its hidden scores, aligned with the completions as written) and
``noise_temperature``; they are kept for the Bayes-optimal accuracy and never shown to a model.

A bad line (not JSON, a missing field, a ranking with fewer than two completions, chosen identical
to rejected, an unknown winner, ...) raises `PreferenceDataError` naming ``file:line``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoner.data.sources import iter_jsonl
from reasoner.data.templates import is_conversation

FORMATS = ("pairs", "rankings", "comparisons")
WINNERS = ("a", "b", "tie")
FLOAT32_MAX = 3.4028234663852886e38


class PreferenceDataError(ValueError):
    """A preference file's line can't be used; the message names the file and line."""


@dataclass
class Comparison:
    """One judged pair of a record's completions: `first` beat `second` (or they tied)."""

    first: int
    second: int
    tie: bool = False
    margin: float | None = None  # TRL's margin column (pairs / comparisons); None without one


@dataclass
class PreferenceRecord:
    """A prompt, its distinct completions and the comparisons among them."""

    prompt: Any  # text, or a list of messages
    completions: list[Any]  # distinct completions: text, or lists of messages
    comparisons: list[Comparison]
    source: str  # "file:line" (the first line, for comparisons grouped by prompt)
    format: str  # pairs | rankings | comparisons
    # the annotator's hidden utility of each completion, and its noise temperature
    utilities: list[float] | None = None
    noise_temperature: float | None = None
    lines: list[int] = field(default_factory=list)

    @property
    def num_pairs(self) -> int:
        return sum(1 for c in self.comparisons if not c.tie)


def record_format(row: dict[str, Any]) -> str | None:
    """Which of FORMATS a line's keys say it is (None: none of them); keys of two formats on
    one line are a PreferenceDataError (the caller adds file:line)."""
    kinds = [kind for kind, hit in (
        ("pairs", "chosen" in row or "rejected" in row),
        ("rankings", "completions" in row),
        ("comparisons", "winner" in row or ("a" in row and "b" in row))) if hit]
    if len(kinds) > 1:
        raise PreferenceDataError(f"keys of two formats ({' and '.join(kinds)}) on one line")
    return kinds[0] if kinds else None


def _key(x: Any) -> str:
    """A hashable identity of a completion or prompt (text or messages)."""
    return x if isinstance(x, str) else json.dumps(x, sort_keys=True)


def _check_text(value: Any, name: str, where: str) -> Any:
    """A text (possibly empty: a model may answer nothing) or a list of messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        for i, m in enumerate(value):
            missing = [k for k in ("role", "content") if k not in m]
            if missing:
                raise PreferenceDataError(f"{where}: {name}[{i}] (a message) has no "
                                          f"{' or '.join(missing)}")
            if not isinstance(m["role"], str) or not m["role"]:
                raise PreferenceDataError(f"{where}: {name}[{i}].role must be a non-empty "
                                          f"string, got {m['role']!r}")
            if not isinstance(m["content"], str):
                raise PreferenceDataError(f"{where}: {name}[{i}].content must be a string, "
                                          f"got {type(m['content']).__name__}")
        return value
    raise PreferenceDataError(f"{where}: {name} must be a string or a list of "
                              f"{{role, content}} messages, got {type(value).__name__}")


def _margin(row: dict[str, Any], where: str) -> float | None:
    if "margin" not in row or row["margin"] is None:
        return None
    m = row["margin"]
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or (
            abs(m) > FLOAT32_MAX):  # the loss is float32: a larger margin is inf there
        raise PreferenceDataError(f"{where}: margin must be a finite number within float32's "
                                  f"range (|margin| <= 3.4e38), got {m!r}")
    return float(m)


def _require(row: dict[str, Any], keys: tuple[str, ...], fmt: str, where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise PreferenceDataError(f"{where}: a {fmt} line needs {', '.join(keys)}; missing "
                                  f"{', '.join(missing)}")


def _same_kind(prompt: Any, completions: list[Any], where: str) -> None:
    conv = [is_conversation(c) for c in completions]
    if any(conv) and not all(conv):
        raise PreferenceDataError(f"{where}: completions mix plain text and messages")
    if isinstance(prompt, str) and prompt and conv[0]:
        raise PreferenceDataError(f"{where}: a plain-text prompt with conversational "
                                  "completions; give the prompt as messages too")
    if is_conversation(prompt) and not conv[0]:
        raise PreferenceDataError(f"{where}: a conversational prompt with plain-text "
                                  "completions; give the completions as messages too")


def _utilities(row: dict[str, Any], n: int, where: str) -> tuple[list[float] | None,
                                                                   float | None]:
    u, t = row.get("utilities"), row.get("noise_temperature")
    if u is None:
        return None, None
    if not isinstance(u, list) or len(u) != n or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in u):
        raise PreferenceDataError(f"{where}: utilities must be a list of {n} finite numbers "
                                  "(one per completion, in the order written)")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
        raise PreferenceDataError(f"{where}: utilities need noise_temperature > 0, got {t!r}")
    return [float(x) for x in u], float(t)


def parse_pair(row: dict[str, Any], where: str) -> PreferenceRecord:
    """A TRL pair line: prompt (optional), chosen, rejected, margin (optional)."""
    _require(row, ("chosen", "rejected"), "pairs", where)
    prompt = _check_text(row.get("prompt", ""), "prompt", where)
    chosen = _check_text(row["chosen"], "chosen", where)
    rejected = _check_text(row["rejected"], "rejected", where)
    _same_kind(prompt, [chosen, rejected], where)
    if _key(chosen) == _key(rejected):
        raise PreferenceDataError(f"{where}: chosen is identical to rejected")
    utilities, temp = _utilities(row, 2, where)
    return PreferenceRecord(prompt, [chosen, rejected], [Comparison(0, 1, False,
                                                                    _margin(row, where))],
                            where, "pairs", utilities, temp)


def parse_ranking(row: dict[str, Any], where: str) -> PreferenceRecord:
    """A ranking line: prompt and completions best first (a list element = tied group)."""
    _require(row, ("prompt", "completions"), "rankings", where)
    if "margin" in row:
        raise PreferenceDataError(f"{where}: margin is for pairs and comparisons, not rankings")
    prompt = _check_text(row["prompt"], "prompt", where)
    ranks = row["completions"]
    if not isinstance(ranks, list):
        raise PreferenceDataError(f"{where}: completions must be a list ordered best first")
    completions: list[Any] = []
    level: list[int] = []
    for r, item in enumerate(ranks):
        group = item if isinstance(item, list) and not is_conversation(item) else [item]
        if not group:
            raise PreferenceDataError(f"{where}: completions[{r}] is an empty tie group")
        for c in group:
            completions.append(_check_text(c, f"completions[{r}]", where))
            level.append(r)
    if len(completions) < 2:
        raise PreferenceDataError(f"{where}: a ranking needs at least two completions, got "
                                  f"{len(completions)}")
    seen: dict[str, int] = {}
    for i, c in enumerate(completions):
        k = _key(c)
        if k in seen:
            raise PreferenceDataError(f"{where}: completion {i} is identical to completion "
                                      f"{seen[k]} (each completion may appear once)")
        seen[k] = i
    _same_kind(prompt, completions, where)
    comps = [Comparison(i, j, level[i] == level[j]) for i in range(len(completions))
             for j in range(i + 1, len(completions))]
    utilities, temp = _utilities(row, len(completions), where)
    return PreferenceRecord(prompt, completions, comps, where, "rankings", utilities, temp)


def parse_comparison(row: dict[str, Any], where: str) -> tuple[Any, Any, Any, Comparison]:
    """(prompt, a, b, comparison of a=0 vs b=1) of a comparison line."""
    _require(row, ("prompt", "a", "b", "winner"), "comparisons", where)
    prompt = _check_text(row["prompt"], "prompt", where)
    a, b = _check_text(row["a"], "a", where), _check_text(row["b"], "b", where)
    _same_kind(prompt, [a, b], where)
    if _key(a) == _key(b):
        raise PreferenceDataError(f"{where}: a is identical to b")
    w = row["winner"]
    if w not in WINNERS:
        raise PreferenceDataError(f"{where}: winner must be one of {', '.join(WINNERS)}, got "
                                  f"{w!r}")
    m = _margin(row, where)
    if w == "tie" and m is not None:
        raise PreferenceDataError(f"{where}: a tie has no margin")
    comp = Comparison(1, 0, False, m) if w == "b" else Comparison(0, 1, w == "tie", m)
    return prompt, a, b, comp


class _PromptGroups:
    """Comparisons grouped by prompt, each distinct completion listed once."""

    def __init__(self) -> None:
        self.records: dict[str, PreferenceRecord] = {}
        self.index: dict[str, dict[str, int]] = {}

    def add(self, prompt: Any, a: Any, b: Any, comp: Comparison, where: str, line: int) -> None:
        pk = _key(prompt)
        if pk not in self.records:
            self.records[pk] = PreferenceRecord(prompt, [], [], where, "comparisons")
            self.index[pk] = {}
        rec, idx = self.records[pk], self.index[pk]
        ids = []
        for c in (a, b):
            ck = _key(c)
            if ck not in idx:
                idx[ck] = len(rec.completions)
                rec.completions.append(c)
            ids.append(idx[ck])
        order = {0: ids[0], 1: ids[1]}
        rec.comparisons.append(Comparison(order[comp.first], order[comp.second], comp.tie,
                                          comp.margin))
        rec.lines.append(line)


def read_preferences(path: str | Path, *, fmt: str = "auto") -> list[PreferenceRecord]:
    """Every record of a preference JSONL file (`fmt`: auto | pairs | rankings | comparisons;
    auto reads each line by its keys). Comparisons are grouped by prompt (in the order the
    prompts first appear, after the other records of the file)."""
    p = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown preference format {fmt!r}; choose auto or one of "
                         f"{', '.join(FORMATS)}")
    if p.is_dir():
        raise PreferenceDataError(f"preference file {str(p)!r} is a folder; give a JSONL file")
    if not p.is_file():
        raise FileNotFoundError(f"preference file {str(p)!r} does not exist")
    out: list[PreferenceRecord] = []
    groups = _PromptGroups()
    try:
        for lineno, row in iter_jsonl(p):
            where = f"{p}:{lineno}"
            try:
                kind = record_format(row) if fmt == "auto" else fmt
            except PreferenceDataError as e:
                raise PreferenceDataError(f"{where}: {e}") from None
            if kind is None:
                raise PreferenceDataError(
                    f"{where}: not a preference line: expected chosen/rejected (pairs), "
                    f"completions (rankings) or a/b/winner (comparisons); keys are "
                    f"{sorted(row)}")
            if kind == "comparisons":
                prompt, a, b, comp = parse_comparison(row, where)
                groups.add(prompt, a, b, comp, where, lineno)
                continue
            rec = parse_pair(row, where) if kind == "pairs" else parse_ranking(row, where)
            rec.lines.append(lineno)
            out.append(rec)
    except PreferenceDataError:
        raise
    except ValueError as e:  # not JSON / not an object: iter_jsonl names file:line
        raise PreferenceDataError(str(e)) from None
    out.extend(groups.records.values())
    if not out:
        raise PreferenceDataError(f"{p}: no preference records")
    return out


def record_to_pairs(rec: PreferenceRecord) -> list[dict[str, Any]]:
    """The record as TRL pair lines (one per non-tie comparison): what TRL's RewardTrainer reads."""
    out = []
    for c in rec.comparisons:
        if c.tie:
            continue
        row: dict[str, Any] = {"prompt": rec.prompt, "chosen": rec.completions[c.first],
                               "rejected": rec.completions[c.second]}
        if c.margin is not None:
            row["margin"] = c.margin
        out.append(row)
    return out
