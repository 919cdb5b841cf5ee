"""Runs the generic suite (run_suite.py) on gloo and on distx with the same
selection and prints pass/skip/fail counts for both, then every test that
passes on gloo but not on distx.

    python tests/generic/compare.py [-k PATTERN] [--world-size 2] [--json out.json]

Tests the suite skips for every backend but gloo (it gates them by name, e.g.
"Only gloo backend supports timeouts") are then run again in alias mode
(run_suite.py with BACKEND=gloo DISTX_AS_GLOO=1): the gates see "gloo", every
process group is created as distx, and the shim checks that each one really
is distx. Their outcome is the "distx as gloo" column.

Exit status is non-zero when a test that passes on gloo fails on distx (in
either mode) and is not listed in known_failures.txt (one test name per line,
'#' comments give the reason). A test that passes on gloo and is absent from
distx's results (the run crashed, a collection error, a test that vanished)
counts as a failure, and so does a pytest run that did not end normally
(exit status other than 0 "all passed" or 1 "some failed", or no JUnit
report): the comparison then exits with status 2 instead of comparing less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))


class SuiteRunError(RuntimeError):
    """A pytest run that did not end normally: nothing it reported can be trusted as complete."""


# pytest's exit statuses: 0 all passed, 1 some tests failed. Anything else
# (2 interrupted, e.g. a collection error; 3 internal error; 4 usage error;
# 5 no tests collected; a signal) means the run itself broke.
_NORMAL_EXIT = (0, 1)


def run_pytest(cmd: list[str], env: dict, cwd: str, xml: str, what: str) -> dict[str, str]:
    """Runs pytest (cmd must write --junitxml=xml) and returns {test name:
    passed|skipped|failed}; raises SuiteRunError when it did not end normally."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = "\n".join(proc.stdout.splitlines()[-30:])
    if proc.returncode not in _NORMAL_EXIT:
        raise SuiteRunError(f"{what}: pytest exited with status {proc.returncode}; its output ends:\n{tail}")
    if not os.path.exists(xml):
        raise SuiteRunError(f"{what}: pytest wrote no JUnit report; its output ends:\n{tail}")
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        outcomes[case.get("name")] = outcome
    if not outcomes:
        raise SuiteRunError(f"{what}: the JUnit report lists no tests; pytest output ends:\n{tail}")
    return outcomes


def run(backend: str, pattern: str | None, world_size: int, timeout: int, alias: bool = False) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        env = dict(os.environ, BACKEND=backend, WORLD_SIZE=str(world_size), TEMP_DIR=tmp)
        if alias:
            env.update(BACKEND="gloo", DISTX_AS_GLOO="1")
        cmd = [sys.executable, "-m", "pytest", os.path.join(HERE, "run_suite.py"), "-q", "-p", "no:cacheprovider",
               f"--junitxml={xml}", f"--timeout={timeout}", "-o", "addopts="]
        if pattern:
            cmd += ["-k", pattern]
        what = f"the generic suite on {backend}" + (" (alias mode)" if alias else "")
        return run_pytest(cmd, env, HERE, xml, what)


def selected(names: list[str], pattern: str) -> list[str]:
    """The names a `pytest -k pattern` run of run_suite.py selects (pytest's own
    expression parser; a name matches on its own name, its class's or the
    module's, case-insensitively, as -k does)."""
    from _pytest.mark.expression import Expression

    expr = Expression.compile(pattern)
    out = []
    for name in names:
        keys = [name.lower(), "testdistbackendwithspawn", "run_suite.py", "generic"]
        if expr.evaluate(lambda sub, **_: any(sub.lower() in k for k in keys)):
            out.append(name)
    return out


def compare(results: dict[str, dict[str, str]], gated: list[str], known: dict[str, str]) -> tuple[list, list]:
    """(regressions, explained): the tests that pass on gloo but did not pass
    on distx (failed, skipped without alias coverage, or missing from distx's
    results), split by whether known_failures.txt explains them."""
    regressions, explained = [], []
    for name, outcome in sorted(results["gloo"].items()):
        if outcome != "passed":
            continue
        other = results["distx"].get(name, "missing")
        if other == "skipped" and name in gated:
            other = results.get("distx as gloo", {}).get(name, "missing")
        if other == "passed":
            continue
        (explained if name in known else regressions).append(name)
    return regressions, explained


def known_failures() -> dict[str, str]:
    path = os.path.join(HERE, "known_failures.txt")
    known = {}
    if os.path.exists(path):
        for line in open(path):
            name, _, reason = line.partition("#")
            if name.strip():
                known[name.strip()] = reason.strip()
    return known


def main() -> int:
    try:
        return _main()
    except SuiteRunError as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 2


def _main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-k", dest="pattern")
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--timeout", type=int, default=120, help="seconds per test")
    p.add_argument("--json")
    p.add_argument("--gloo-json", help="reuse gloo results saved by an earlier --json run")
    p.add_argument("--only", choices=("gloo", "distx"), help="run one backend and save it with --json")
    args = p.parse_args()
    if args.only:
        res = run(args.only, args.pattern, args.world_size, args.timeout)
        with open(args.json, "w") as f:
            json.dump({args.only: res}, f, indent=1)
        return 0
    results = {}
    if args.gloo_json:
        with open(args.gloo_json) as f:
            results["gloo"] = json.load(f)["gloo"]
        if args.pattern:  # keep the baseline rows the selection selects (whether or not distx ran them)
            keep = set(selected(list(results["gloo"]), args.pattern))
            results["gloo"] = {k: v for k, v in results["gloo"].items() if k in keep}
            if not results["gloo"]:
                raise SuiteRunError(f"-k {args.pattern!r} selects no test of the gloo baseline {args.gloo_json}")
    else:
        results["gloo"] = run("gloo", args.pattern, args.world_size, args.timeout)
    results["distx"] = run("distx", args.pattern, args.world_size, args.timeout)
    print(f"generic suite (torch.testing._internal.distributed.distributed_test), world size {args.world_size}"
          + (f", -k '{args.pattern}'" if args.pattern else ""))
    for b, res in results.items():
        counts = {k: sum(1 for v in res.values() if v == k) for k in ("passed", "skipped", "failed")}
        print(f"  {b:6s} passed {counts['passed']:4d}  skipped {counts['skipped']:4d}  failed {counts['failed']:4d}")
    missing = sorted(set(results["gloo"]) - set(results["distx"]))
    if missing:
        print(f"  {len(missing)} tests of the gloo run are missing from distx's results: {', '.join(missing[:10])}")
    known = known_failures()
    gated = sorted(name for name, outcome in results["gloo"].items()
                   if outcome == "passed" and results["distx"].get(name) == "skipped")
    if gated:
        ran = run("distx", " or ".join(gated), args.world_size, args.timeout, alias=True)
        # -k matches substrings (test_x also selects test_x_cuda): keep the gated names only
        res = results["distx as gloo"] = {name: ran.get(name, "missing") for name in gated}
        counts = {k: sum(1 for v in res.values() if v == k) for k in ("passed", "skipped", "failed", "missing")}
        print(f"  distx as gloo (the {len(gated)} tests gated to gloo by name): passed {counts['passed']}"
              f"  skipped {counts['skipped']}  failed {counts['failed']}  missing {counts['missing']}")
    regressions, explained = compare(results, gated, known)
    for name in explained:
        print(f"  known distx failure: {name}: {known[name]}")
    for name in regressions:
        print(f"  FAILS ON DISTX ONLY: {name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
