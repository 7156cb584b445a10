"""How well must a reward model check answers to come within N points of the annotator?

    python benchmarks/rm_gap_bound.py --rankings runs/rm/test.jsonl [--reward-model runs/rm/rm/final]

Reads held-out rankings written by `reasoner preferences` (they carry the synthetic annotator's
utilities) and gives, on the annotator's own labels, the expected pairwise accuracy of judges
that know every completion's form and length exactly and check answers with a given accuracy
(`SyntheticAnnotator.judge_accuracy`): from one that never checks them to one that always
does (the Bayes-optimal accuracy), and the answer-checking accuracy a judge needs to come within
`--points` of Bayes. With `--reward-model`, the model's expected accuracy on the same pairs and
where its gap is, by the kind of pair (correct vs wrong, form, length). Writes
benchmarks/results/rm_gap_bound.{json,md} (`--out` elsewhere). No timing: a few seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/rm_gap_bound.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results  # noqa: E402

CHECK_ACCURACIES = (None, 0.8, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0)


def needed_check_accuracy(ann, records, bayes: float, points: float) -> float:
    """The smallest answer-checking accuracy whose judge is within `points` of Bayes (the
    judge's accuracy rises with it: bisection)."""
    lo, hi = 0.5, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if 100 * (bayes - ann.judge_accuracy(records, mid)) <= points:
            hi = mid
        else:
            lo = mid
    return hi


def pair_kind(ann, u_hi: float, u_lo: float, formed_hi: bool, formed_lo: bool) -> str:
    c_hi, c_lo = ann.is_correct(u_hi), ann.is_correct(u_lo)
    form = {True: "well-formed", False: "malformed"}
    if c_hi != c_lo:
        return f"correct {form[formed_hi]} vs wrong {form[formed_lo]}"
    if formed_hi != formed_lo:
        return "form only (" + ("both correct)" if c_hi else "both wrong)")
    return "length only" if formed_hi else "malformed, equal form"


def reward_model_rows(ann, records, rm_dir: str, bayes_n: int) -> tuple[float, list[dict]]:
    """The reward model's expected accuracy on the annotator's labels, and its gap by kind."""
    from reasoner.models.reward import encode_sequence, load_reward_model, score_sequences
    from reasoner.preferences.annotator import sigmoid
    from reasoner.verifiers.format import strict_format_ok

    model, tok = load_reward_model(rm_dir)
    records = [r for r in records if r.utilities is not None]
    seqs = [encode_sequence(tok, r.prompt, c) for r in records for c in r.completions]
    flat = score_sequences(model, seqs, tok.pad_token_id, batch_size=128, device="cpu")
    kinds: dict[str, list[float]] = {}
    total, k = 0.0, 0
    for r in records:
        s, u = flat[k:k + len(r.completions)], r.utilities
        k += len(r.completions)
        formed = [strict_format_ok(c) if isinstance(c, str) else False for c in r.completions]
        for c in r.comparisons:
            if c.tie:
                continue
            hi, lo = (c.first, c.second) if u[c.first] >= u[c.second] else (c.second, c.first)
            p = sigmoid((u[hi] - u[lo]) / r.noise_temperature)
            q = 0.5 if s[hi] == s[lo] else (p if s[hi] > s[lo] else 1 - p)
            g = kinds.setdefault(pair_kind(ann, u[hi], u[lo], formed[hi], formed[lo]),
                                 [0, 0.0, 0.0, 0])
            g[0] += 1
            g[1] += q
            g[2] += p
            g[3] += s[hi] > s[lo]
            total += q
    rows = [{"pairs": kind, "n": g[0], "share": round(g[0] / bayes_n, 3),
             "reward_model": round(g[1] / g[0], 3), "bayes": round(g[2] / g[0], 3),
             "prefers_higher_utility": round(g[3] / g[0], 3),
             "gap_points": round(100 * (g[2] - g[1]) / bayes_n, 2)}
            for kind, g in sorted(kinds.items(), key=lambda kv: -(kv[1][2] - kv[1][1]))]
    return total / bayes_n, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rankings", required=True,
                    help="held-out rankings from `reasoner preferences` (with utilities)")
    ap.add_argument("--reward-model", default=None, help="a `reasoner rm` output's final/")
    ap.add_argument("--points", type=float, default=3.0, help="the distance to Bayes asked for")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()

    from reasoner.preferences.annotator import SyntheticAnnotator, bayes_accuracy_of_records
    from reasoner.preferences.formats import read_preferences

    records = read_preferences(args.rankings)
    bayes = bayes_accuracy_of_records(records)
    if bayes is None:
        sys.exit(f"{args.rankings}: no record carries the annotator's utilities")
    n = sum(1 for r in records if r.utilities is not None for c in r.comparisons if not c.tie)
    ann = SyntheticAnnotator()  # its weights say which utilities are correct answers
    rows = []
    for a in CHECK_ACCURACIES:
        acc = ann.judge_accuracy(records, a)
        rows.append({"judge": ("form and length, never the answer" if a is None else
                               f"form and length, answers right {100 * a:g} %"),
                     "expected_accuracy": round(acc, 4),
                     "gap_points": round(100 * (bayes - acc), 2)})
    needed = needed_check_accuracy(ann, records, bayes, args.points)
    extra = {"rankings": args.rankings, "pairs": n, "bayes_accuracy": round(bayes, 4),
             "points": args.points, "answer_check_needed": round(needed, 4)}
    notes = (f"A judge that knows form and length exactly must check answers right in "
             f"{100 * needed:.1f} % of completions to come within {args.points:g} points of "
             f"the annotator's Bayes-optimal accuracy on these pairs. Accuracies are expected "
             f"ones: each pair counts the annotator's probability of its label, "
             f"sigmoid(|u_a - u_b| / T), when the judge orders it as the utilities do.")
    if args.reward_model:
        rm_acc, kinds = reward_model_rows(ann, records, args.reward_model, n)
        rows.append({"judge": f"reward model {args.reward_model}",
                     "expected_accuracy": round(rm_acc, 4),
                     "gap_points": round(100 * (bayes - rm_acc), 2)})
        extra["reward_model"] = args.reward_model
        extra["by_kind"] = kinds
        notes += "\n\nThe reward model's gap by the kind of pair:\n\n" + markdown_table(kinds)
    write_results("rm_gap_bound", rows, extra=extra, notes=notes, out_dir=args.out,
                  title="How well a reward model must check answers")
    print(notes)


if __name__ == "__main__":
    main()
