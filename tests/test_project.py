"""Project-level contracts: the README's commands, CI, the CLI entry points."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = ROOT.joinpath("README.md").read_text().splitlines()
    start = lines.index("```bash")
    end = lines.index("```", start + 1)
    return lines[start + 1 : end]


def test_readme_starts_with_two_commands():
    lines = ROOT.joinpath("README.md").read_text().splitlines()
    assert lines[2] == "```bash"
    cmds = readme_commands()
    assert len(cmds) == 2
    assert "reasoner demo" in cmds[0]
    assert "pytest" in cmds[1]


def test_kernels_import_name_does_not_clash():
    import reasoner_kernels

    assert Path(reasoner_kernels.__file__).parent.name == "kernels"


def test_python_m_reasoner_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "reasoner", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "verify" in out.stdout


def test_every_package_is_in_pyprojects_package_list():
    """pyproject lists packages explicitly: a subpackage left out installs from an editable
    checkout but is missing from a wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    listed = set(tomllib.loads(ROOT.joinpath("pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in ROOT.joinpath("reasoner").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert "reasoner_kernels" in listed
