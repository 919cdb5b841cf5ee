"""The test tools themselves fail loudly: a case missing from a rank's
results, a strict distx_bug marker that starts passing, a generic-suite run
that crashed or lost tests. None of these spawns a world or imports
torch_distx (a few seconds in all)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from distx_testing import CaseTable

HERE = os.path.dirname(os.path.abspath(__file__))
# Bare pytest subprocesses: without third-party plugins (hypothesis, timeout)
# they start in a fraction of the time.
_ENV = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
sys.path.insert(0, os.path.join(HERE, "..", "generic"))
import compare  # noqa: E402  (tests/generic/compare.py)


def _table(outcome: list[dict]) -> CaseTable:
    table = CaseTable(lambda ws: {"a": None, "b": None})
    table._worlds[len(outcome)] = outcome  # as if the world had run and returned this
    return table


def test_case_table_passes_only_cases_every_rank_reported_as_passed():
    _table([{"a": None, "b": None}, {"a": None, "b": None}]).check(2, "a")


def test_case_table_fails_a_case_missing_from_one_rank():
    table = _table([{"a": None, "b": None}, {"a": None}])  # rank 1 never ran "b"
    table.check(2, "a")
    with pytest.raises(AssertionError, match=r"rank 1: case missing"):
        table.check(2, "b")


def test_case_table_fails_a_failed_case():
    with pytest.raises(AssertionError, match=r"rank 0: ValueError: boom"):
        _table([{"a": "ValueError: boom"}, {"a": None}]).check(2, "a")


def _run_pytest(tmp_path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(open(os.path.join(HERE, "conftest.py")).read())
    (tmp_path / "test_it.py").write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_ENV)


def test_distx_bug_marker_is_a_strict_xfail(tmp_path):
    proc = _run_pytest(tmp_path, """
        import pytest

        @pytest.mark.distx_bug
        def test_still_broken():
            assert False

        @pytest.mark.distx_bug
        def test_fixed_meanwhile():
            assert True
    """)
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 xfailed" in proc.stdout, proc.stdout
    assert "XPASS(strict)" in proc.stdout, proc.stdout


def test_compare_counts_a_test_missing_on_distx_as_a_regression():
    results = {"gloo": {"test_a": "passed", "test_b": "passed", "test_c": "passed", "test_d": "failed"},
               "distx": {"test_a": "passed", "test_c": "skipped"},  # test_b vanished; test_c gated
               "distx as gloo": {}}                                  # and test_c's alias run lost it
    regressions, explained = compare.compare(results, gated=["test_c"], known={})
    assert regressions == ["test_b", "test_c"] and explained == []
    regressions, explained = compare.compare(results, gated=["test_c"], known={"test_b": "why"})
    assert regressions == ["test_c"] and explained == ["test_b"]


def test_compare_selects_baseline_rows_as_pytest_k_does():
    names = ["test_all_reduce_sum", "test_all_reduce_sum_cuda", "test_barrier", "test_broadcast"]
    assert compare.selected(names, "test_all_reduce_sum or test_barrier") == names[:3]
    assert compare.selected(names, "not cuda and all_reduce") == ["test_all_reduce_sum"]
    assert compare.selected(names, "Spawn") == names  # the class name matches, as in pytest


@pytest.mark.parametrize("body,status", [
    ("import no_such_module_anywhere\ndef test_x(): pass\n", "status 2"),  # collection error
    ("import os\ndef test_x(): os._exit(0)\n", "no JUnit report"),          # the run died mid-way
    ("", "status 5"),                                                       # nothing collected
])
def test_compare_raises_when_a_pytest_run_breaks(tmp_path, body, status):
    (tmp_path / "test_it.py").write_text(body)
    xml = str(tmp_path / "junit.xml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={xml}",
           str(tmp_path / "test_it.py")]
    with pytest.raises(compare.SuiteRunError, match=status):
        compare.run_pytest(cmd, _ENV, str(tmp_path), xml, "a broken run")


def test_compare_reads_a_normal_run_with_failures(tmp_path):
    (tmp_path / "test_it.py").write_text("import pytest\ndef test_ok(): pass\ndef test_bad(): assert 0\n"
                                         "def test_skip(): pytest.skip('no')\n")
    xml = str(tmp_path / "junit.xml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={xml}",
           str(tmp_path / "test_it.py")]
    got = compare.run_pytest(cmd, _ENV, str(tmp_path), xml, "a normal run")
    assert got == {"test_ok": "passed", "test_bad": "failed", "test_skip": "skipped"}
