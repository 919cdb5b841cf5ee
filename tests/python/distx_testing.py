"""Multi-process test harness for torch-distx: run a function on N ranks.

    from distx_testing import run_ranks

    def _worker(rank, world_size, scale):          # module level: spawn pickles it by name
        t = torch.full((4,), float(rank))
        dist.all_reduce(t)
        return t * scale                           # anything picklable (tensors too)

    results = run_ranks(_worker, 3, 2.0)           # [rank 0's result, rank 1's, rank 2's]

What ``run_ranks`` does:

- starts ``world_size`` fresh processes. The default start method is
  multiprocessing's "forkserver" with torch preloaded: a clean single-threaded
  server process imports torch once and forks each rank from it, so a 4-rank
  world starts in ~0.1 s instead of ~12 s on 2 cores (spawn re-imports torch in
  every rank and tears the interpreter down at exit). Each rank imports
  torch_distx and sets up UCX itself, as a real job does.
  ``start_method="spawn"`` (or DISTX_TEST_START_METHOD=spawn) uses plain spawn.
  The forkserver keeps the environment of the first call: pass per-run
  variables with ``env=``, not by changing os.environ in the test;
- rendezvous through a FileStore in a private temporary directory (default) or
  a TCPStore whose server lives in the parent on a port the kernel picked (bind
  port 0), so concurrent test runs on one machine never collide and port 29500
  is never used;
- ``dist.init_process_group(backend, store=..., rank=..., world_size=...,
  timeout=pg_timeout)`` unless ``backend=None`` (then fn gets the store through
  ``current_store()`` and sets up what it wants), runs ``fn(rank, world_size,
  *args)``, then ``destroy_process_group()``;
- brings back each rank's return value, or its exception (type, message and
  traceback; re-raised in the parent as ``RankFailed``);
- enforces a hard wall-clock ``timeout``: a rank that is still running then is
  killed and the call fails with ``RankHung`` naming it and showing where each
  of its Python threads was (faulthandler, on SIGUSR1 just before the kill),
  instead of blocking CI. When one rank fails, the others get ``grace``
  seconds to finish before they are killed too (a peer of a failed rank
  usually waits in a collective). A rank that returned but then exited
  non-zero (a crash in teardown) counts as failed.

``run_ranks_raw`` returns every rank's ``RankResult`` (ok, value, exc_type,
message, traceback, exitcode, hung) without raising: for tests of failures.
Keyword arguments for fn go in ``fn_kwargs=``.

Results travel through files written with the standard pickler (tensors are
serialised by value), not through a pipe, so big results cannot deadlock the
join and nothing depends on a child staying alive after it wrote its result.

The environment is left as the user has it (UCX_*, DISTX_* pass through);
``env=`` adds variables in the children only.
"""

from __future__ import annotations

import datetime
import faulthandler
import importlib
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = [
    "CaseTable",
    "RankFailed",
    "RankHung",
    "RankResult",
    "all_reduce_until_error",
    "current_store",
    "free_port",
    "import_example",
    "run_ranks",
    "run_ranks_raw",
    "wait_all",
]

_STORE = None  # the store of this child process, for backend=None workers
_PRELOAD = ["torch", "torch.distributed", "torch._dynamo"]  # dynamo: torch.optim imports it (~2 s)


def _context(start_method: str | None):
    method = start_method or os.environ.get("DISTX_TEST_START_METHOD", "forkserver")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)  # takes effect when the server starts (first use)
    return ctx


class RankFailed(AssertionError):
    """A rank raised (or died); carries every rank's outcome."""

    def __init__(self, message: str, outcomes: Sequence["RankResult"]):
        super().__init__(message)
        self.outcomes = list(outcomes)


class RankHung(RankFailed):
    """A rank was still running at the hard timeout and was killed."""


@dataclass
class RankResult:
    rank: int
    ok: bool
    value: Any = None          # fn's return value when ok
    exc_type: str = ""         # e.g. "DistBackendError"; "" when ok
    message: str = ""          # str(exception)
    traceback: str = ""
    exitcode: int | None = None
    hung: bool = False
    seconds: float = 0.0       # wall time of fn in the child


def free_port() -> int:
    """A TCP port that was free a moment ago (for tools that need a port
    number, e.g. torchrun --master-port). Prefer run_ranks(store="tcp"),
    which has no race at all."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def current_store():
    """The c10d store of this rank (inside a run_ranks child)."""
    return _STORE


def _write(path: str, payload: dict) -> None:
    tmp = path + ".tmp"
    try:
        data = pickle.dumps(payload)
    except Exception as e:  # noqa: BLE001  (an unpicklable result or exception)
        data = pickle.dumps({"ok": False, "exc_type": "PicklingError",
                             "message": f"result of rank could not be pickled: {e!r}; payload {payload!r:.500}",
                             "traceback": traceback.format_exc(), "seconds": payload.get("seconds", 0.0)})
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _child(fn: Callable, rank: int, world_size: int, args: tuple, fn_kwargs: dict, backend: str | None,
           store_kind: str, store_arg: Any, pg_timeout_s: float, env: dict, out_path: str) -> None:
    global _STORE
    os.environ.update(env)
    # On a hang the parent sends SIGUSR1 and reports where every thread was.
    stacks = open(out_path + ".stacks", "w")  # noqa: SIM115  (lives as long as the process)
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    start = time.monotonic()
    payload: dict
    try:
        import torch.distributed as dist

        import torch_distx  # noqa: F401  (registers "distx")

        timeout = datetime.timedelta(seconds=pg_timeout_s)
        if store_kind == "file":
            _STORE = dist.FileStore(store_arg, world_size)
        else:
            _STORE = dist.TCPStore("127.0.0.1", store_arg, world_size, is_master=False,
                                   timeout=datetime.timedelta(seconds=60))
        if backend is not None:
            dist.init_process_group(backend, store=_STORE, rank=rank, world_size=world_size, timeout=timeout)
        try:
            value = fn(rank, world_size, *args, **fn_kwargs)
        finally:
            if backend is not None and dist.is_initialized():
                dist.destroy_process_group()
        payload = {"ok": True, "value": value}
    except BaseException as e:  # noqa: BLE001  (report everything, SystemExit included)
        payload = {"ok": False, "exc_type": type(e).__name__, "message": str(e),
                   "traceback": traceback.format_exc()}
    payload["seconds"] = time.monotonic() - start
    _write(out_path, payload)


def run_ranks_raw(fn: Callable, world_size: int, *args: Any, backend: str | None = "distx",
                  store: str = "file", timeout: float = 120.0, pg_timeout: float = 60.0, grace: float = 10.0,
                  env: dict | None = None, fn_kwargs: dict | None = None,
                  start_method: str | None = None) -> list[RankResult]:
    """Runs fn on world_size spawned ranks and returns every rank's outcome
    without raising for a failed rank (tests of failures inspect them).

    backend: the default group's backend; None = no init_process_group.
    store: "file" (FileStore in a temp dir) or "tcp" (TCPStore served by the parent).
    timeout: hard wall-clock limit for the whole run, seconds.
    pg_timeout: the process group's timeout, seconds.
    grace: once a rank failed, how long the others may still run.
    env: extra environment variables for the children.
    fn_kwargs: keyword arguments for fn.
    start_method: "forkserver" (default) or "spawn".
    """
    if store not in ("file", "tcp"):
        raise ValueError(f"store must be 'file' or 'tcp', got {store!r}")
    ctx = _context(start_method)
    tmp = tempfile.mkdtemp(prefix="distx-test-")
    server = None
    procs: list = []
    try:
        if store == "file":
            store_arg: Any = os.path.join(tmp, "store")
        else:
            import torch.distributed as dist

            server = dist.TCPStore("127.0.0.1", 0, None, is_master=True, wait_for_workers=False,
                                   timeout=datetime.timedelta(seconds=60))
            store_arg = server.port
        outs = [os.path.join(tmp, f"rank{r}.pkl") for r in range(world_size)]
        for r in range(world_size):
            p = ctx.Process(target=_child, name=f"distx-rank{r}", daemon=True,
                            args=(fn, r, world_size, args, dict(fn_kwargs or {}), backend, store, store_arg, pg_timeout,
                                  dict(env or {}), outs[r]))
            p.start()
            procs.append(p)

        deadline = time.monotonic() + timeout
        first_failure: float | None = None
        checked: set[int] = set()
        while True:
            alive = [p for p in procs if p.is_alive()]
            if not alive:
                break
            now = time.monotonic()
            if first_failure is None:
                for r, p in enumerate(procs):
                    if r in checked:
                        continue
                    if not p.is_alive() and p.exitcode != 0:
                        first_failure = now
                    elif os.path.exists(outs[r]):
                        checked.add(r)
                        if not _read(outs[r]).get("ok", False):
                            first_failure = now
            if now >= deadline or (first_failure is not None and now >= first_failure + grace):
                break
            alive[0].join(0.05)

        hung_ranks = [r for r, p in enumerate(procs) if p.is_alive()]
        for r in hung_ranks:
            try:
                os.kill(procs[r].pid, signal.SIGUSR1)
            except OSError:
                pass
        if hung_ranks:
            time.sleep(0.5)
        results = []
        for r, p in enumerate(procs):
            hung = r in hung_ranks
            if hung:
                p.kill()
                p.join(5)
            payload = _read(outs[r]) if os.path.exists(outs[r]) else None
            if payload is None:
                why = ("still running at the hard timeout; killed" if hung else
                       f"exited with code {p.exitcode} without reporting a result")
                if hung:
                    why += "; its Python stacks then:\n" + _stacks(outs[r] + ".stacks")
                results.append(RankResult(r, False, exc_type="RankHung" if hung else "RankDied",
                                          message=why, exitcode=p.exitcode, hung=hung))
            else:
                res = RankResult(r, payload["ok"], payload.get("value"), payload.get("exc_type", ""),
                                 payload.get("message", ""), payload.get("traceback", ""),
                                 p.exitcode, hung, payload.get("seconds", 0.0))
                if res.ok and p.exitcode != 0:  # e.g. a crash in teardown at interpreter exit
                    res.ok, res.exc_type = False, "BadExit"
                    res.message = (f"returned normally but then " + ("hung at exit; killed" if hung else
                                   f"exited with code {p.exitcode}"))
                results.append(res)
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        if server is not None:
            del server
        shutil.rmtree(tmp, ignore_errors=True)


def _stacks(path: str, limit: int = 6000) -> str:
    """faulthandler's dump, without the frames of this harness."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return "(none)"
    return text[-limit:] if text else "(none: stuck outside Python?)"


def _read(path: str) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def run_ranks(fn: Callable, world_size: int, *args: Any, **kwargs: Any) -> list[Any]:
    """Like run_ranks_raw, but returns [value of rank 0, ..., rank P-1] and
    raises RankFailed / RankHung (an AssertionError) when any rank did not
    return normally, with the failed ranks' tracebacks in the message."""
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    results = run_ranks_raw(fn, world_size, *args, **kwargs)
    bad = [r for r in results if not r.ok]
    if bad:
        lines = [f"{len(bad)} of {world_size} ranks failed running {getattr(fn, '__name__', fn)}:"]
        for r in bad:
            lines.append(f"--- rank {r.rank}: {r.exc_type}: {r.message}")
            if r.traceback:
                lines.append(r.traceback.rstrip())
        cls = RankHung if any(r.hung for r in bad) else RankFailed
        raise cls("\n".join(lines), results)
    return [r.value for r in results]


# ------------------------------------------------------------- in a rank

def wait_all(works: Sequence[Any]) -> list[str | None]:
    """Waits on every work; for each, None where it completed, else the message
    of the RuntimeError it raised (DistBackendError is one)."""
    errors: list[str | None] = []
    for w in works:
        try:
            w.wait()
            errors.append(None)
        except RuntimeError as e:
            errors.append(str(e))
    return errors


def all_reduce_until_error(t: Any, max_calls: int) -> tuple[str | None, float]:
    """All-reduces ``t`` up to ``max_calls`` times, stopping at the first error
    (a dead peer, say); returns it as "Type: message" (None if every call
    succeeded) and the seconds the loop took."""
    import torch.distributed as dist

    start = time.monotonic()
    error = None
    try:
        for _ in range(max_calls):
            dist.all_reduce(t)
    except Exception as e:  # noqa: BLE001
        error = f"{type(e).__name__}: {e}"
    return error, time.monotonic() - start


def import_example(name: str) -> Any:
    """examples/<name>.py as a module. Imported by name (not from a file spec),
    so that spawned ranks can import it too."""
    examples = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
    if examples not in sys.path:
        sys.path.insert(0, examples)
    return importlib.import_module(name)


# ------------------------------------------------------------- case tables

def _run_case_table(rank: int, world_size: int, cases: Callable, isolate: bool) -> dict[str, str | None]:
    """In every rank: runs each case(rank, world_size, gloo_group) of
    cases(world_size) and returns {name: None or "ExcType: message"}."""
    import warnings

    import pytest
    import torch.distributed as dist

    warnings.simplefilter("ignore", FutureWarning)  # all_gather_into_tensor & co. deprecation notes
    warnings.simplefilter("ignore", UserWarning)
    gloo = dist.new_group(backend="gloo")
    outcome: dict[str, str | None] = {}
    for name, case in cases(world_size).items():
        try:
            case(rank, world_size, gloo)
            outcome[name] = None
        except (Exception, pytest.fail.Exception) as e:  # noqa: BLE001  (pytest.raises fails with the latter)
            outcome[name] = f"{type(e).__name__}: {e}"
            if not isolate and isinstance(e, dist.DistBackendError):
                raise  # the group is broken now; stop here
        if isolate:
            dist.barrier(group=gloo)  # a failed case must not leak messages into the next
    return outcome


class CaseTable:
    """Many small cases run in one world per world size, each reported as its
    own pytest test:

        TABLE = CaseTable(cases, timeout=150, pg_timeout=60)   # cases(ws) -> {name: fn}
        @pytest.mark.parametrize("ws,name", TABLE.params(WORLD_SIZES))
        def test_x(ws, name):
            TABLE.check(ws, name)

    The world of a size starts on its first test and its outcome is kept, so
    one spawn serves every case. ``isolate=True`` keeps going after a case
    fails with a DistBackendError and puts a gloo barrier between cases;
    otherwise such a failure ends the world (the group is broken).
    Keyword arguments go to run_ranks (e.g. store="tcp")."""

    def __init__(self, cases: Callable, isolate: bool = False, **run_kwargs: Any):
        self.cases, self.isolate, self.run_kwargs = cases, isolate, run_kwargs
        self._worlds: dict[int, Any] = {}

    def params(self, world_sizes: Sequence[int]) -> list:
        import pytest

        return [pytest.param(ws, name, id=f"P{ws}-{name}") for ws in world_sizes for name in self.cases(ws)]

    def check(self, ws: int, name: str) -> None:
        import pytest

        __tracebackhide__ = True
        if ws not in self._worlds:
            try:
                self._worlds[ws] = run_ranks(_run_case_table, ws, self.cases, self.isolate, **self.run_kwargs)
            except AssertionError as e:
                self._worlds[ws] = e
        out = self._worlds[ws]
        if isinstance(out, AssertionError):
            pytest.fail(f"the {ws}-rank world failed:\n{out}", pytrace=False)
        # A case a rank never reported (it stopped early, or cases() named
        # other cases in the child) fails: only an explicit None is a pass.
        errors = {r: ("case missing from this rank's results (never ran)" if name not in per_rank
                      else per_rank[name])
                  for r, per_rank in enumerate(out) if name not in per_rank or per_rank[name] is not None}
        assert len(out) == ws, f"{len(out)} results for a {ws}-rank world"
        assert not errors, "\n".join(f"rank {r}: {msg}" for r, msg in errors.items())
