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
'#' comments give the reason).
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
        subprocess.run(cmd, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        outcomes = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
            outcomes[case.get("name")] = outcome
        return outcomes


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
        if args.pattern:  # keep the baseline rows the selection would have run
            ran = run("distx", args.pattern, args.world_size, args.timeout)
            results["gloo"] = {k: v for k, v in results["gloo"].items() if k in ran}
            results["distx"] = ran
    else:
        results["gloo"] = run("gloo", args.pattern, args.world_size, args.timeout)
    if "distx" not in results:
        results["distx"] = run("distx", args.pattern, args.world_size, args.timeout)
    print(f"generic suite (torch.testing._internal.distributed.distributed_test), world size {args.world_size}"
          + (f", -k '{args.pattern}'" if args.pattern else ""))
    for b, res in results.items():
        counts = {k: sum(1 for v in res.values() if v == k) for k in ("passed", "skipped", "failed")}
        print(f"  {b:6s} passed {counts['passed']:4d}  skipped {counts['skipped']:4d}  failed {counts['failed']:4d}")
    known = known_failures()
    gated = sorted(name for name, outcome in results["gloo"].items()
                   if outcome == "passed" and results["distx"].get(name) == "skipped")
    if gated:
        ran = run("distx", " or ".join(gated), args.world_size, args.timeout, alias=True)
        # -k matches substrings (test_x also selects test_x_cuda): keep the gated names only
        res = results["distx as gloo"] = {name: ran.get(name, "missing") for name in gated}
        counts = {k: sum(1 for v in res.values() if v == k) for k in ("passed", "skipped", "failed")}
        print(f"  distx as gloo (the {len(gated)} tests gated to gloo by name): passed {counts['passed']}"
              f"  skipped {counts['skipped']}  failed {counts['failed']}")
    regressions, explained = [], []
    for name, outcome in sorted(results["gloo"].items()):
        if outcome != "passed":
            continue
        other = results["distx"].get(name)
        if other == "skipped" and name in gated:
            other = results["distx as gloo"].get(name)
        if other == "passed":
            continue
        (explained if name in known else regressions).append(name)
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
