"""Every ```python block of README.md, CONTRIBUTING.md and docs/*.md runs, so
no documented line can break unseen.

Each block is one test, id ``<file>:<line of the opening fence>``. The line
right before the fence says how to run it:

    <!-- run: torchrun 2 -->      as a script under
                                  `python -m torch.distributed.run --standalone --nproc-per-node=2`
                                  (c10d rendezvous on a port torchrun picks)
    <!-- fragment: short-name --> not run: a piece that cannot stand alone
                                  (a user's model, a GPU, output of a 4-rank job);
                                  the skip names the fragment
    (nothing)                     as a script in a fresh `sys.executable` process

Each run gets a clean temporary cwd and a hard timeout; a non-zero exit fails
the test with the tail of the block's stderr. A block that imports an optional
client library (Lightning, Accelerate) that is not installed skips and says so
(`make clients` installs them). The files are globbed at collection time, so a
new doc is picked up without touching this file.

Also here: the lazy submodules of ``torch_distx`` (PEP 562): the docs call
``torch_distx.ps.attach(...)`` after a bare ``import torch_distx``.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC_PATTERNS = ("README.md", "CONTRIBUTING.md", "docs/*.md")
TIMEOUT_S = 120
MIN_BLOCKS = 10  # the docs held 13 blocks when this test was written
# Optional packages a block may import: a block needing one that is missing skips.
OPTIONAL = {"lightning": "make clients", "accelerate": "make clients"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_RUN = re.compile(r"^<!--\s*run:\s*torchrun\s+(?P<n>\d+)\s*-->$")
_FRAGMENT = re.compile(r"^<!--\s*fragment:\s*(?P<name>[\w.:/-]+)\s*-->$")
_MARKER = re.compile(r"^<!--\s*(run|fragment)\s*:")


@dataclass
class Block:
    file: str    # relative to the repo
    line: int    # 1-based line of the opening fence
    code: str
    marker: str  # the line before the fence, stripped ("" if none)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def _doc_files() -> list[str]:
    found: set[str] = set()
    for pattern in DOC_PATTERNS:
        found.update(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, pattern)))
    return sorted(found)


def _blocks_of(rel: str) -> list[Block]:
    """The python fenced blocks of one Markdown file (CommonMark fences: ``` or
    ~~~, closed by the same character at least as long; indented ones, as in
    lists, are dedented)."""
    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip()
        lang = info.split()[0].lower() if info else ""
        start, body = i, []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            closing = close and not close["info"].strip()
            if closing and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence):
                break
            body.append(lines[i])
            i += 1
        i += 1  # past the closing fence (or the end of the file)
        if lang in ("python", "py", "python3"):
            marker = lines[start - 1].strip() if start > 0 else ""
            blocks.append(Block(rel, start + 1, textwrap.dedent("\n".join(body)) + "\n", marker))
    return blocks


def _all_blocks() -> list[Block]:
    return [b for rel in _doc_files() for b in _blocks_of(rel)]


BLOCKS = _all_blocks()


def _missing_optional(code: str) -> str | None:
    """The first optional package the block imports that is not installed."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None  # the run reports it
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        for name in names:
            root = name.split(".")[0]
            if root in OPTIONAL and importlib.util.find_spec(root) is None:
                return root
    return None


def _run(cmd: list[str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """Runs cmd in its own session; on timeout kills it and everything it
    started (torchrun's workers) and fails with what it printed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")  # 2 cores: no oversubscription (torchrun sets it as well)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"did not finish in {timeout} s: {' '.join(cmd)}\nstdout tail:\n{out[-2000:]}\n"
                    f"stderr tail:\n{err[-4000:]}", pytrace=False)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS])
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_doc_block_runs(block: Block, tmp_path) -> None:
    fragment, run = _FRAGMENT.match(block.marker), _RUN.match(block.marker)
    if fragment:
        pytest.skip(f"fragment: {fragment['name']}")
    if _MARKER.match(block.marker) and not run:
        pytest.fail(f"{block.id}: unknown marker {block.marker!r} (use '<!-- run: torchrun 2 -->' or "
                    f"'<!-- fragment: name -->')", pytrace=False)
    missing = _missing_optional(block.code)
    if missing:
        pytest.skip(f"needs {missing}, not installed ({OPTIONAL[missing]})")
    script = tmp_path / "doc_block.py"
    script.write_text(block.code)
    if run:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={run['n']}",
               "--max-restarts=0", str(script)]
    else:
        cmd = [sys.executable, str(script)]
    res = _run(cmd, cwd=str(tmp_path), timeout=TIMEOUT_S)
    if res.returncode != 0:
        pytest.fail(f"{block.id} exited with {res.returncode} ({'torchrun ' + run['n'] if run else 'python'}):\n"
                    f"--- block ---\n{block.code}--- stdout tail ---\n{res.stdout[-2000:]}\n"
                    f"--- stderr tail ---\n{res.stderr[-(8000 if run else 4000):]}",  # torchrun adds ~2.5 kB
                    pytrace=False)


def test_docs_have_blocks() -> None:
    """The collector cannot silently find nothing (a renamed file, a broken fence regex)."""
    files = {b.file for b in BLOCKS}
    assert "README.md" in files and "docs/ps.md" in files and "docs/compression.md" in files, files
    assert len(BLOCKS) >= MIN_BLOCKS, f"only {len(BLOCKS)} python blocks in {_doc_files()}"


def test_collector_reads_markers_and_fences(tmp_path, monkeypatch) -> None:
    doc = tmp_path / "docs" / "x.md"
    doc.parent.mkdir()
    doc.write_text(textwrap.dedent("""\
        text
        <!-- run: torchrun 2 -->
        ```python
        a = 1
        ```
        <!-- fragment: bits -->
        ````py
        ```
        b = 2
        ````
        - list item:

          ```python
          c = 3
          ```
        ```bash
        echo no
        ```
        """))
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    got = [(b.id, b.marker, b.code) for b in _blocks_of("docs/x.md")]
    assert got == [("docs/x.md:3", "<!-- run: torchrun 2 -->", "a = 1\n"),
                   ("docs/x.md:7", "<!-- fragment: bits -->", "```\nb = 2\n"),
                   ("docs/x.md:13", "", "c = 3\n")], got


def test_submodules_are_lazy_and_reachable() -> None:
    """`import torch_distx` loads none of the lazy submodules; each is reachable
    as an attribute afterwards; an unknown name still raises AttributeError."""
    code = textwrap.dedent("""
        import sys, torch_distx
        lazy = ["bench", "hooks", "info", "ops", "ps"]
        loaded = [m for m in lazy if "torch_distx." + m in sys.modules]
        assert not loaded, f"imported eagerly: {loaded}"
        assert set(lazy) <= set(dir(torch_distx)) and set(lazy) <= set(torch_distx.__all__)
        assert callable(torch_distx.ps.attach) and "torch_distx.ps" in sys.modules
        assert torch_distx.hooks.TopKState is not None and torch_distx.ops.topk_count(100, 0.1) == 10
        assert torch_distx.info.main and torch_distx.bench.__name__ == "torch_distx.bench"
        try:
            torch_distx.no_such_thing
        except AttributeError as e:
            assert str(e) == "module 'torch_distx' has no attribute 'no_such_thing'", str(e)
        else:
            raise AssertionError("no AttributeError")
        try:
            from torch_distx import no_such_thing  # noqa: F401
        except ImportError:
            pass
        else:
            raise AssertionError("no ImportError")
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S,
                         cwd=REPO)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-4000:]
