"""`python3 dev.py mutate` (bench/mutation.py): what it mutates and runs, and how it scores."""

import importlib.util
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("mutation", ROOT / "bench" / "mutation.py")
mutation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutation)


@pytest.mark.parametrize("module", mutation.MODULES)
def test_each_module_names_a_source_file_and_test_files_that_exist(module):
    source, tests = mutation.MODULES[module]
    assert (ROOT / source).is_file() and tests and all((ROOT / test).is_file() for test in tests)


def test_a_work_folder_looks_like_the_project_and_mutates_only_its_module(tmp_path, monkeypatch):
    monkeypatch.setattr(mutation, "WORK", tmp_path)
    folder = mutation.workdir("payments/stripe")

    assert folder == tmp_path / "payments-stripe"
    assert all((folder / name).resolve() == ROOT / name for name in ("services", "shared", "tests"))
    config = tomllib.loads((folder / "pyproject.toml").read_text())
    assert config["tool"]["mutmut"]["only_mutate"] == ["services/api/payments/stripe.py"]
    assert config["tool"]["mutmut"]["pytest_add_cli_args_test_selection"] == mutation.MODULES["payments/stripe"][1]
    assert config["tool"]["pytest"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]


def test_the_score_counts_timeouts_as_caught_and_untested_mutants_as_survivors():
    score = mutation.Score("senders", {"m1": "killed", "m2": "killed", "m3": "timeout", "m4": "survived",
                                       "m5": "no tests"}, {"m4": "- a < b / + a <= b"})
    assert score.survivors == ["m4", "m5"] and score.percent == 60.0
    lines = mutation.report([score, mutation.Score("outbox", error="mutmut exited with 1")]).splitlines()
    assert lines[1].split() == ["senders", "5", "2", "2", "1", "60.0%"]
    assert lines[2].split()[0] == "outbox" and "mutmut exited with 1" in lines[2]
    assert "survived: m4" in lines and "    - a < b / + a <= b" in lines and "no tests: m5" in lines
