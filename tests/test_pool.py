"""WorkerPool: order, hard timeouts, crashes, external kills, memory cap, threads, early stop.

Tasks are stdlib functions (picklable by reference), so the workers need nothing from tests/.
"""

from __future__ import annotations

import operator
import os
import signal
import threading
import time

import pytest

from reasoner.verifiers.pool import TaskResult, WorkerPool, worker_info


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(workers=2, timeout=2.0, memory_mb=512) as p:
        yield p


def test_results_in_input_order(pool: WorkerPool) -> None:
    # later tasks are faster than earlier ones: order must still be the input order
    args = [(0.05 * (i % 3 == 0),) for i in range(12)]
    res = pool.map(time.sleep, args)
    assert [r.status for r in res] == ["ok"] * 12
    vals = pool.map(operator.mul, [(i, i) for i in range(300)])
    assert [r.value for r in vals] == [i * i for i in range(300)]


def test_timeout_kills_and_replaces_worker(pool: WorkerPool) -> None:
    before = set(pool.pids())
    respawned = pool.respawned
    res = pool.map(time.sleep, [(0,), (60,), (0,)])
    assert [r.status for r in res] == ["ok", "timeout", "ok"]
    assert "killed after 2s" in (res[1].error or "")
    assert pool.respawned == respawned + 1
    assert len(pool.pids()) == 2 and set(pool.pids()) != before
    # the pool keeps working afterwards
    assert [r.value for r in pool.map(pow, [(2, 5), (3, 2)])] == [32, 9]


def test_per_call_timeout_override(pool: WorkerPool) -> None:
    res = pool.map(time.sleep, [(3,)], timeout=0.2)
    assert res[0].status == "timeout"


def test_crashing_task_is_reported_and_worker_replaced(pool: WorkerPool) -> None:
    res = pool.map(os._exit, [(3,)])
    assert res[0].status == "crashed" and "code 3" in (res[0].error or "")
    mixed = list(pool.imap(pow, [(2, 3), (2, 4)]))
    assert [r.value for r in mixed] == [8, 16]


def test_exception_in_task_is_an_error_not_a_crash(pool: WorkerPool) -> None:
    res = pool.map(operator.truediv, [(1, 0), (6, 3)])
    assert res[0].status == "error" and "ZeroDivisionError" in (res[0].error or "")
    assert res[1].value == 2.0


def test_worker_killed_from_outside_mid_batch(pool: WorkerPool) -> None:
    killed: list[int] = []

    def killer() -> None:
        for _ in range(500):
            running = pool.running()
            if 0 in running:
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])
                return
            time.sleep(0.01)

    t = threading.Thread(target=killer)
    t.start()
    res = pool.map(time.sleep, [(1.5,), (0,), (0,), (0,)], timeout=30)
    t.join()
    assert killed, "the slow task was never seen running"
    assert res[0].status == "crashed"
    assert [r.status for r in res[1:]] == ["ok", "ok", "ok"]
    assert killed[0] not in pool.pids() and len(pool.pids()) == 2


def test_memory_cap(pool: WorkerPool) -> None:
    info = pool.map(worker_info, [("sympy",)])[0].value
    assert info["rlimit_as"] - info["vm_at_cap"] == 512 * 1024 * 1024
    assert 0 < info["vm_at_cap"] < 4 * 1024**3
    res = pool.map(bytearray, [(2 * 1024**3,), (16,)])
    assert res[0].status == "error" and res[0].error == "MemoryError"
    assert res[1].value == bytearray(16)  # same worker, still healthy


def test_usable_from_a_non_main_thread() -> None:
    out: list[list[TaskResult]] = []
    with WorkerPool(workers=1, timeout=1.0) as p:
        t = threading.Thread(target=lambda: out.append(p.map(time.sleep, [(0,), (10,)])))
        t.start()
        t.join(30)
    assert [r.status for r in out[0]] == ["ok", "timeout"]


def test_stream_is_lazy_and_early_stop_is_clean() -> None:
    pulled: list[int] = []

    def gen():
        for i in range(10_000):
            pulled.append(i)
            yield (i, 2)

    with WorkerPool(workers=1, timeout=5.0, lookahead=4) as p:
        it = p.imap(pow, gen())
        first = [next(it).value for _ in range(3)]
        it.close()  # stop early: in-flight work is dropped, workers stay usable
        assert first == [0, 1, 4]
        assert len(pulled) < 20
        assert p.map(pow, [(3, 3)])[0].value == 27


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(workers=0)
    with pytest.raises(ValueError, match="timeout"):
        WorkerPool(timeout=0)
    p = WorkerPool(workers=1)
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.map(pow, [(1, 1)])


def test_nested_imap_in_one_thread_raises_instead_of_deadlocking() -> None:
    with WorkerPool(workers=1, timeout=5.0) as p:
        outer = p.imap(pow, [(2, 2), (2, 3)])
        assert next(outer).value == 4
        with pytest.raises(RuntimeError, match="unfinished imap"):
            p.map(pow, [(1, 1)])
        assert next(outer).value == 8
        outer.close()
        assert p.map(pow, [(2, 1)])[0].value == 2


def test_workers_do_not_reimport_the_callers_main_script(tmp_path) -> None:
    import subprocess
    import sys

    marker = tmp_path / "imports.txt"
    script = tmp_path / "train_script.py"
    script.write_text(
        "import os\n"
        f"open({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "if __name__ == '__main__':\n"
        "    from reasoner.verifiers.pool import WorkerPool\n"
        "    with WorkerPool(workers=2, timeout=10) as p:\n"
        "        print(sum(r.value for r in p.map(pow, [(2, i) for i in range(8)])))\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "255"
    assert len(marker.read_text().split()) == 1  # only the parent ran the script's top level
