"""The settings table (Note [Settings table], csrc/common/settings.cpp): one
list of every setting, and what it feeds (torch_distx.Options, the README's
table, `python -m torch_distx.info`) agrees with it; group settings given as
pg_options beat the environment, are read once per group, and bad values name
their source."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import torch_distx
from distx_testing import run_ranks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _table() -> list[tuple]:
    return torch_distx._C.settings()


def test_options_fields_are_the_group_settings() -> None:
    options = [row[0] for row in _table() if row[0] is not None]
    assert list(torch_distx.Options.__slots__) == options
    assert len(set(row[1] for row in _table())) == len(_table())


def test_readme_lists_every_setting_with_its_field() -> None:
    text = open(os.path.join(ROOT, "README.md")).read()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(DISTX_[A-Z_]+)` \| ([^|]+) \|", text, re.M)}
    for option, variable, *_ in _table():
        assert variable in rows, f"README's settings table lacks {variable}"
        assert rows[variable].strip() == (f"`{option}`" if option else "-"), (variable, rows[variable])
    assert set(rows) == {row[1] for row in _table()}


def test_info_prints_every_setting() -> None:
    proc = subprocess.run([sys.executable, "-m", "torch_distx.info"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "DISTX_PIECE_BYTES": "4096"})
    assert proc.returncode == 0, proc.stderr
    for option, variable, *_ in _table():
        line = next((l for l in proc.stdout.splitlines() if l.split()[:1] == [variable]), None)
        assert line is not None, f"{variable} missing from:\n{proc.stdout}"
        assert line.split()[1] == (option or "-"), line
    assert any(l.split()[:3] == ["DISTX_PIECE_BYTES", "piece_bytes", "4096"] for l in proc.stdout.splitlines())


def _algo_per_group(rank: int, ws: int) -> dict:
    # DISTX_ALGO=ring in the environment: the default group rings; a group made
    # with Options(algo="recursive_doubling") does recursive doubling; changing
    # the variable after creation changes neither (read once per group).
    forced = dist.new_group(pg_options=torch_distx.Options(algo="recursive_doubling"))
    os.environ["DISTX_ALGO"] = "no-such-algorithm"  # read once: too late to matter
    gloo = dist.new_group(backend="gloo")
    out = {}
    for name, group in (("default", None), ("forced", forced)):
        t = torch.arange(1000, dtype=torch.float32) * (rank + 1)
        want = t.clone()
        dist.all_reduce(t, group=group)
        dist.all_reduce(want, group=gloo)
        out[name] = torch.equal(t, want)
    out["topology"] = torch_distx.topology()
    return out


@pytest.mark.timeout(120)
def test_group_settings_are_read_once_per_group() -> None:
    for rank, r in enumerate(run_ranks(_algo_per_group, 2, env={"DISTX_ALGO": "ring"}, timeout=90)):
        assert r["default"] and r["forced"], f"rank {rank}: {r}"


def _bad_option(rank: int, ws: int) -> str:
    try:
        dist.new_group(pg_options=torch_distx.Options(piece_bytes=100))
    except ValueError as e:
        return str(e)
    return "no error"


@pytest.mark.timeout(120)
def test_bad_group_option_names_pg_options_field() -> None:
    for rank, msg in enumerate(run_ranks(_bad_option, 2, env={"DISTX_PIECE_BYTES": "4096"}, timeout=90)):
        assert "pg_options.piece_bytes must be 'auto', 0 or an integer between 256" in msg, f"rank {rank}: {msg}"
