"""Built-in tasks: deterministic, disjoint splits, solutions verified by the task's own reward."""

import pytest

from reasoner.tasks import TASKS, extract_answer, get_task
from reasoner.tasks.countdown import countdown_reward, evaluate_expression
from reasoner.verifiers.format import strict_format_ok
from reasoner.verifiers.rewards import REWARDS, get_reward

TASK_OPTIONS = [
    ("arithmetic", {}),
    ("arithmetic", {"ops": ("+", "-", "*"), "digits": (1, 3)}),
    ("countdown", {}),
    ("countdown", {"count": (3, 4), "max_number": 20}),
]


def _columns(rows):
    return {k: [r.get(k) for r in rows] for k in rows[0]}


@pytest.mark.parametrize("name,opts", TASK_OPTIONS)
def test_rows_deterministic_and_disjoint(name, opts):
    task = get_task(name, **opts)
    a = task.rows("train", 300, seed=1)
    assert a == task.rows("train", 300, seed=1)
    assert a != task.rows("train", 300, seed=2)
    test = task.rows("test", 100, seed=0)
    train_q = {r["question"] for r in a} | {r["question"] for r in task.rows("train", 300, seed=2)}
    assert not train_q & {r["question"] for r in test}
    assert len({r["question"] for r in a}) == 300  # distinct within a call


@pytest.mark.parametrize("name,opts", TASK_OPTIONS)
def test_solutions_are_correct_and_well_formatted(name, opts):
    task = get_task(name, **opts)
    rows = task.rows("train", 200, seed=0)
    for r in rows:
        assert {"question", "answer", "solution"} <= set(r)
        assert strict_format_ok(r["solution"]), r["solution"]
    cols = _columns(rows)
    acc = get_reward(task.accuracy_reward)([""] * len(rows), [r["solution"] for r in rows], **cols)
    assert acc == [1.0] * len(rows)
    for fn_name, weight in task.reward_funcs:
        assert fn_name in REWARDS and weight > 0
    assert task.reward_funcs[0] == (task.accuracy_reward, 1.0)


def test_arithmetic_values():
    task = get_task("arithmetic", ops=("*",), digits=2)
    for r in task.rows("train", 50, seed=0):
        a, b = (int(x) for x in r["question"].split("*"))
        assert 10 <= a <= 99 and 10 <= b <= 99 and r["answer"] == str(a * b)
    from reasoner.tasks.arithmetic import worked_solution

    assert worked_solution(47, "*", 85) == "47*85=47*80+47*5=3760+235=3995</think><answer>3995</answer>"
    assert worked_solution(12, "+", 34) == "12+34=46</think><answer>46</answer>"


def test_integer_exact_reward():
    f = get_reward("integer_exact")
    comps = ["x</think><answer>46</answer>", "<answer> 46 </answer>", "<answer>47</answer>",
             "no answer", "<answer>46.0</answer>", "<answer>-5</answer>", "<answer>1</answer>"]
    answers = ["46", "46", "46", "46", "46", "-5", "abc"]
    assert f([""] * 7, comps, answer=answers) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, None]


def test_countdown_reward_rules():
    nums, target = [3, 5, 2], 16
    cases = {
        "(3+5)*2": 1.0,
        "2*(5+3)=16": 1.0,
        "3+5*2": 0.0,              # 13
        "(3+5)*2*1": 0.0,          # 1 not given
        "(5+5)+3*2": 0.0,          # 5 used twice
        "16": 0.0,                 # 16 not given
        "__import__('os')": 0.0,   # not an allowed node
        "3/(5-5)": 0.0,            # division by zero (and 5 twice)
        "-3+5": 0.0,               # unary minus not allowed
        "3**2": 0.0,
        "(3+5": 0.0,
    }
    comps = [f"...</think><answer>{e}</answer>" for e in cases]
    got = countdown_reward([""] * len(comps), comps, numbers=[nums] * len(comps), target=[target] * len(comps))
    assert got == list(cases.values())
    # fractions in between are fine: 3/(5/2)... = 6/5; (2/5+3)*5 = 17
    assert evaluate_expression("(2/5+3)*5")[0] == 17
    assert countdown_reward([""], ["<answer>(2/5+3)*5</answer>"], numbers=[[2, 5, 3, 5]], target=[17]) == [1.0]
    assert countdown_reward([""], ["<answer>1</answer>"], numbers=[None], target=[None]) == [None]


def test_countdown_verifier_via_registry():
    from reasoner.verifiers import registry

    with registry.create("countdown") as v:
        out = list(v.score([{"completion": "<answer>3+5</answer>", "numbers": [3, 5], "target": 8},
                            {"completion": "<answer>3-5</answer>", "numbers": [3, 5], "target": 8}]))
    assert [x.correct for x in out] == [True, False]


def test_extract_answer_takes_last_block():
    assert extract_answer("<answer>1</answer> then <answer> 2 </answer>") == "2"
    assert extract_answer("<answer>1") is None


def test_bad_options_and_names():
    assert set(TASKS) >= {"arithmetic", "countdown"}
    with pytest.raises(KeyError, match="unknown task"):
        get_task("chess")
    with pytest.raises(ValueError, match="ops"):
        get_task("arithmetic", ops=("^",))
    with pytest.raises(ValueError, match="bad option"):
        get_task("arithmetic", colour="red")
    with pytest.raises(ValueError, match="split"):
        get_task("arithmetic").rows("validation", 3, 0)
    with pytest.raises(ValueError, match="distinct"):
        get_task("arithmetic", digits=1).rows("train", 500, 0)  # only 100 problems exist


def test_unset_num_train_rows_takes_every_train_row_of_a_small_task():
    """data.num_train_rows unset: 10000 rows, or all a smaller task has (the built-in default
    task, 1-2 digit addition, has 8994 train problems, and the default config was refused); a
    number the task can't make is still refused."""
    from reasoner.config import ConfigError, load_config
    from reasoner.data import DEFAULT_TRAIN_ROWS, load_training_data
    from reasoner.tasks.base import in_test_split

    assert load_config(None, []).data.num_train_rows is None and DEFAULT_TRAIN_ROWS == 10000
    cfg = load_config(None, ["data.task_options={digits: 1}"])  # 100 problems
    rows = load_training_data(cfg.data).rows
    train = {f"{a}+{b}" for a in range(10) for b in range(10) if not in_test_split(f"{a}+{b}", 10)}
    assert sorted(r["question"] for r in rows) == sorted(train) and len(rows) == 85
    assert rows == load_training_data(cfg.data).rows  # the same rows, the same order
    cfg = load_config(None, ["data.task_options={digits: 1}", "data.num_train_rows=20"])
    assert load_training_data(cfg.data).rows == rows[:20]
    cfg = load_config(None, ["data.task_options={digits: 1}", "data.num_train_rows=200"])
    with pytest.raises(ConfigError, match="data.num_train_rows=200: task 'arithmetic' could only "
                       "make 85 distinct train rows"):
        load_training_data(cfg.data)
