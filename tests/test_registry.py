"""The one registry helper: run-time registration, built-ins imported on first use (no import
side effects), entry-point groups, module paths; and the registries built on it."""

import subprocess
import sys
import textwrap

import pytest

from reasoner.registry import Registry, UnknownNameError, load_path


def double(x):
    return 2 * x


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed-looking package `fake_plugin` with one entry point in each group given."""

    def install(groups):
        (tmp_path / "fake_plugin.py").write_text(
            "def triple(x):\n    return 3 * x\n\n\nclass Thing:\n    pass\n")
        info = tmp_path / "fake_plugin-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("".join(
            f"[{group}]\n{name} = fake_plugin:{attr}\n\n" for group, name, attr in groups))
        monkeypatch.syspath_prepend(str(tmp_path))

    return install


def test_lookup_order_registered_builtin_entry_point_module_path(plugin):
    plugin([("test.things", "plugged", "triple"), ("test.things", "double", "triple")])
    reg = Registry("thing", "test.things", {"double": "test_registry:double"})
    assert reg.get("double") is double  # built-in before the entry point of the same name
    assert reg.get("plugged")(2) == 6  # entry point
    assert reg.get("test_registry:double") is double  # module path
    assert reg.names() == ["double", "plugged"]
    assert "plugged" in reg and "nope" not in reg
    reg.register("double", len)  # run-time registration wins
    assert reg.get("double") is len
    reg.unregister("double")
    assert reg.get("double") is double

    @reg.register("deco")
    def f():
        return 1

    assert reg.get("deco") is f and list(reg) == ["deco", "double", "plugged"]


def test_unknown_names_and_bad_paths_name_the_kind_and_the_choices():
    reg = Registry("widget", "test.widgets", {"a": "test_registry:double"})
    with pytest.raises(UnknownNameError) as e:
        reg.get("b")
    assert str(e.value) == "unknown widget 'b'; available: a (or module:attribute)"
    assert isinstance(e.value, KeyError)
    with pytest.raises(UnknownNameError, match="widget 'no_such_module_x:f': cannot import"):
        reg.get("no_such_module_x:f")
    with pytest.raises(UnknownNameError, match="cannot import"):
        reg.get("test_registry:no_such_attr")
    with pytest.raises(ValueError, match="without ':'"):
        reg.register("a:b", double)
    with pytest.raises(ValueError, match="not a 'module:attribute' path"):
        load_path("no_colon")


def test_every_kind_is_open_through_its_entry_point_group(plugin):
    from reasoner.tasks import TASKS
    from reasoner.verifiers import registry
    from reasoner.verifiers.rewards import REWARDS, get_reward

    plugin([("reasoner.rewards", "plugged_reward", "triple"),
            ("reasoner.verifiers", "plugged_verifier", "Thing"),
            ("reasoner.tasks", "plugged_task", "Thing")])
    assert get_reward("plugged_reward")(5) == 15 and "plugged_reward" in REWARDS.names()
    assert type(registry.create("plugged_verifier")).__name__ == "Thing"
    assert "plugged_verifier" in registry.available()
    assert TASKS.get("plugged_task").__name__ == "Thing"


def test_builtins_are_not_imported_until_asked_for():
    """Importing the registries registers nothing by side effect and imports no built-in."""
    code = textwrap.dedent("""
        import sys
        import reasoner.tasks, reasoner.verifiers.rewards, reasoner.verifiers.registry
        from reasoner.verifiers.rewards import REWARDS
        lazy = ["reasoner.tasks.arithmetic", "reasoner.tasks.countdown", "reasoner.verifiers.math",
                "reasoner.verifiers.code"]
        assert not [m for m in lazy if m in sys.modules], [m for m in lazy if m in sys.modules]
        assert "integer_exact" in REWARDS and "countdown" in REWARDS.names()
        assert REWARDS.get("integer_exact").__module__ == "reasoner.tasks.arithmetic"
        print("LAZY-OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "LAZY-OK" in r.stdout, r.stderr[-2000:]
