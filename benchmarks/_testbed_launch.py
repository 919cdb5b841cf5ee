"""What the multi-host benchmarks share (allreduce_multihost.py,
compression_multihost.py, ddp_step_timeline.py): the launch on the testbed of
tests/multihost/testbed.py.

Each of them runs twice: as the orchestrator, outside the testbed, which makes
the namespace hosts and starts itself under torchrun on every host with
``--worker --out PATH`` (:func:`run_workers`); and as those ranks, which find
``--worker`` set (:func:`add_worker_options`), measure, and write their results
from rank 0 as JSON to PATH, read back by the orchestrator. :func:`run` makes
that choice after the command line is parsed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from types import ModuleType
from typing import Any, Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_worker_options(p: argparse.ArgumentParser) -> None:
    """The hidden options of the rank side: --worker and --out PATH."""
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)


def tx_bytes() -> int:
    """Bytes this host has sent on its link (eth0's counter: payload, TCP/IP and
    Ethernet headers, ACKs). /sys is the host's own: `ip netns exec` remounts it
    for the namespace."""
    with open("/sys/class/net/eth0/statistics/tx_bytes") as f:
        return int(f.read())


def run(a: argparse.Namespace, worker: Callable[[argparse.Namespace], None],
        orchestrate: Callable[[argparse.Namespace, ModuleType], int], prefix: str) -> int:
    """The exit code of the benchmark: on a rank (--worker) ``worker(a)``, 0;
    else ``orchestrate(a, testbed module)``, or 2 where the testbed cannot run
    here (after printing ``prefix: why``)."""
    if a.worker:
        worker(a)
        return 0
    module = testbed(prefix)
    if module is None:
        return 2
    return orchestrate(a, module)


def testbed(prefix: str) -> ModuleType | None:
    """tests/multihost/testbed.py, or None after printing ``prefix: why`` to
    stderr where it cannot run here (it needs root, iproute2, util-linux)."""
    sys.path.insert(0, os.path.join(REPO, "tests", "multihost"))
    import testbed as module

    reason = module.unavailable_reason()
    if reason:
        print(f"{prefix}: {reason}", file=sys.stderr)
        return None
    return module


def run_workers(tb: Any, script: str, out: str, args: Sequence[str], *, nproc_per_host: int,
                **torchrun: Any) -> dict | None:
    """torchrun ``script --worker --out OUT ARGS`` on every host of the testbed
    ``tb`` (``torchrun``: env, timeout, master_port, as Testbed.torchrun takes
    them); rank 0's JSON, or None after printing the tail of every host's output
    where a host failed or nothing was written."""
    res = tb.torchrun(os.path.abspath(script), ["--worker", "--out", out, *args],
                      nproc_per_host=nproc_per_host, **torchrun)
    if any(r.returncode != 0 for r in res) or not os.path.exists(out):
        for r in res:
            print(f"--- host {r.host} (rc {r.returncode})\n{r.output[-4000:]}", file=sys.stderr)
        return None
    with open(out) as f:
        return json.load(f)


def write_json(path: str | None, doc: Any) -> None:
    """``doc`` as indented JSON to ``path`` (--json), where one is given."""
    if path:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)


def write_outputs(a: argparse.Namespace, doc: Any, plot: Callable[[str], None]) -> None:
    """The orchestrator's files: ``doc`` as JSON to --json and ``plot(path)`` to
    --plot, each where given."""
    write_json(a.json, doc)
    if a.plot:
        plot(a.plot)
