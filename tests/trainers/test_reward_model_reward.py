"""A reward model trained by `reasoner rm` is a reward in `reasoner train`: combined by weight
with a rule-based reward, scored batched on the policy's device, its running normalization in
the checkpoint; `reasoner preferences` ranks a policy's samples."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from reasoner.config import ConfigError, load_config
from reasoner.models.reward import encode_sequence, load_reward_model, score_sequences
from reasoner.preferences.formats import read_preferences
from reasoner.trainers import train
from reasoner.trainers.grpo import GRPOTrainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
TESTS = ROOT / "tests"


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A reward model trained two steps by `reasoner rm` on a handful of rankings."""
    from test_reward_trainer import TINY_RM, write_rankings

    d = tmp_path_factory.mktemp("rm")
    data = write_rankings(d / "prefs.jsonl", 8)
    cfg = load_config(None, [*TINY_RM, f"train.output_dir={d / 'run'}",
                             f"rm.dataset_path={data}", "train.max_steps=2",
                             "train.per_device_train_batch_size=4"])
    train(cfg, progress=False)
    return d / "run" / "final"


def test_reward_model_combined_with_a_rule_reward_in_grpo(tmp_path, reward_model):
    out = tmp_path / "grpo"
    cfg = load_config(TINY, [f"train.output_dir={out}", "train.max_steps=2", "train.save_steps=2",
                             "rewards.names=[integer_exact, reward_model]",
                             "rewards.reward_weights=[1.0, 0.5]",
                             f"rewards.reward_model_path={reward_model}",
                             "rewards.reward_model_batch_size=3",
                             "train.log_completions_steps=1", "train.num_completions_to_log=8",
                             "train.report_to_tensorboard=false"])
    t = GRPOTrainer(cfg, progress=False)
    step = t.train_step()
    rm_fn = t.reward_funcs[1].func
    assert rm_fn.device == t.device and rm_fn.batch_size == 3
    # the reward model's value of each completion: prompt + completion scored by the saved model
    model, tok = load_reward_model(reward_model)
    b = step.batch
    want = score_sequences(model, [encode_sequence(tok, p, c) for p, c in zip(b.prompts, b.texts)],
                           tok.pad_token_id, batch_size=1, device="cpu")
    assert b.per_func[1] == pytest.approx(want, abs=1e-5)
    assert len(set(round(x, 6) for x in want)) > 1
    total = [1.0 * r + 0.5 * m for r, m in zip(b.per_func[0], b.per_func[1])]
    assert step.rewards.total.tolist() == pytest.approx(total)
    assert math.isfinite(step.metrics["rewards/reward_model/mean"])


def test_running_normalization_is_checkpointed_and_resumes_exactly(tmp_path, reward_model):
    extra = ["rewards.names=[reward_model]", f"rewards.reward_model_path={reward_model}",
             "rewards.reward_model_normalize=true", "train.max_steps=3", "train.save_steps=2",
             "train.report_to_tensorboard=false"]
    ref, out = tmp_path / "ref", tmp_path / "resumed"
    train(load_config(TINY, [f"train.output_dir={ref}", *extra]), progress=False)
    state = json.loads((ref / "checkpoint-2" / "trainer_state.json").read_text())
    moments = state["rewards"]["reward_model"]["moments"]
    assert moments["count"] == 2 * 8  # two steps of 8 completions
    # stop after checkpoint-2, then resume: the normalization goes on from the saved moments
    train(load_config(TINY, [f"train.output_dir={out}", *extra[:-2], "train.max_steps=2",
                             "train.save_steps=2", "train.report_to_tensorboard=false"]),
          progress=False)
    train(load_config(TINY, [f"train.output_dir={out}", *extra]), resume=True, progress=False)
    last = lambda p: json.loads((p / "metrics.jsonl").read_text().splitlines()[-1])  # noqa: E731
    assert last(out)["reward/mean"] == last(ref)["reward/mean"]
    # normalized: the first step's rewards have mean 0 and std 1 over the batch
    first = json.loads((ref / "metrics.jsonl").read_text().splitlines()[0])
    assert first["reward/mean"] == pytest.approx(0.0, abs=1e-6)


def test_reward_model_needs_its_path():
    with pytest.raises(ConfigError, match="rewards.reward_model_path"):
        load_config(TINY, ["rewards.names=[reward_model]"])


def test_a_reward_model_path_must_hold_a_trained_score_head(tmp_path, reward_model):
    """A causal LM would load with a new, random score head and train against noise; a
    classifier of several labels has no one score: both stop the run, naming the field."""
    from reasoner.models import build_tiny_model
    from reasoner.models.reward import check_reward_model_dir

    check_reward_model_dir(reward_model, "rewards.reward_model_path")  # ours: fine
    lm = build_tiny_model(tmp_path / "lm", hidden_size=32, num_layers=1, num_heads=2,
                          num_kv_heads=1)
    cfg = load_config(TINY, [f"train.output_dir={tmp_path / 'run'}", "train.max_steps=1",
                             "rewards.names=[reward_model]", f"rewards.reward_model_path={lm}"])
    with pytest.raises(ConfigError, match="rewards.reward_model_path .* is a Qwen2ForCausalLM, "
                                          "not a reward model: it has no trained score head"):
        train(cfg, progress=False)
    two = tmp_path / "two"
    two.mkdir()
    conf = json.loads((reward_model / "config.json").read_text())
    conf["id2label"] = {"0": "bad", "1": "good"}
    (two / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ConfigError, match="is a classifier of 2 labels"):
        check_reward_model_dir(two, "rewards.reward_model_path")


def test_reasoner_preferences_ranks_distinct_samples_with_utilities(tmp_path, model_tok):
    model, tok = model_tok
    policy = tmp_path / "policy"
    model.save_pretrained(policy)
    tok.save_pretrained(policy)
    out = tmp_path / "prefs.jsonl"
    r = subprocess.run([sys.executable, "-m", "reasoner", "preferences", "--policy", str(policy),
                        "--task", "arithmetic", "--k", "4", "--n", "6", "--max-new-tokens", "8",
                        "--output", str(out), "--no-progress"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = read_preferences(out)
    assert len(recs) == 6 and all(2 <= len(x.completions) <= 4 for x in recs)
    for x in recs:
        assert x.utilities is not None and x.noise_temperature == 0.05
        assert len(x.comparisons) == len(x.completions) * (len(x.completions) - 1) // 2
    assert "Bayes-optimal pairwise accuracy" in r.stdout
    pairs = tmp_path / "pairs.jsonl"
    r = subprocess.run([sys.executable, "-m", "reasoner", "preferences", "--policy", str(policy),
                        "--task", "arithmetic", "--k", "3", "--n", "2", "--max-new-tokens", "8",
                        "--format", "pairs", "--output", str(pairs), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(x.format == "pairs" for x in read_preferences(pairs))


def test_on_samples_sees_every_first_draw_with_its_utility(tmp_path, model_tok):
    """The RLHF demo measures a policy on exactly the samples that were ranked: `on_samples`
    gets each batch of first draws, K per row in row order, with the annotator's utilities."""
    from reasoner.preferences.annotator import SyntheticAnnotator
    from reasoner.preferences.sample import sample_preferences
    from reasoner.tasks import get_task

    model, tok = model_tok
    policy = tmp_path / "policy"
    model.save_pretrained(policy)
    tok.save_pretrained(policy)
    chunks = []
    r = sample_preferences(policy, "arithmetic", k=3, n=5, output=tmp_path / "p.jsonl",
                           max_new_tokens=8, batch_size=2, progress=False,
                           on_samples=chunks.append)
    assert r.records + r.left_out == 5
    assert [len(c.rows) for c in chunks] == [6, 6, 3]  # batches of 2 rows x K = 3
    task, ann = get_task("arithmetic"), SyntheticAnnotator()
    for c in chunks:
        texts = c.rollout.completion_texts
        assert len(c.prompts) == len(c.utilities) == len(texts) == len(c.rows)
        assert all(c.rows[g] is c.rows[g - g % 3] for g in range(len(c.rows)))  # K per row
        assert c.utilities == ann.utilities(task, c.prompts, texts, c.rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "policy"]  # no leftover

    # a run that fails part-way (here: killed by its callback) leaves the earlier file as it
    # was, and no partial one; nonsense options are refused before anything is sampled
    before = (tmp_path / "p.jsonl").read_text()

    def fail(chunk):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_preferences(policy, "arithmetic", k=3, n=5, output=tmp_path / "p.jsonl",
                           max_new_tokens=8, batch_size=2, progress=False, on_samples=fail)
    assert (tmp_path / "p.jsonl").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "policy"]
    for kwargs, message in (({"temperature": 0.0}, "--temperature must be a finite number > 0"),
                            ({"max_new_tokens": 0}, "--max-new-tokens must be >= 1")):
        with pytest.raises(ValueError, match=message):
            sample_preferences(policy, "arithmetic", k=3, n=5, output=tmp_path / "p.jsonl",
                               progress=False, **kwargs)
    with pytest.raises(ValueError, match="is a folder"):
        sample_preferences(policy, "arithmetic", k=3, n=5, output=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="do not fit in the model's"):
        sample_preferences(policy, "arithmetic", k=3, n=5, output=tmp_path / "p.jsonl",
                           max_new_tokens=100_000, progress=False)


def test_a_sequence_longer_than_the_reward_models_positions_is_an_error(reward_model):
    from reasoner.models.reward import RewardModelReward

    model, tok = load_reward_model(reward_model)
    r = RewardModelReward(model, tok, batch_size=4, device="cpu")
    assert len(r(["2+3\n<think>"], ["5</think><answer>5</answer>"])) == 1
    n = model.config.max_position_embeddings
    with pytest.raises(ConfigError, match=f"does not fit in the reward model's {n} positions"):
        r(["2+3\n<think>"], ["9" * (n + 5)])
