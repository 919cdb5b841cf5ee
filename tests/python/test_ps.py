"""Parameter-server mode (torch_distx.ps): API refusals, convergence for
s in {0, 2, -1}, s=0 against DDP on the summed gradient (delta and server
modes), the SSP bound on every reply, checkpoint restore, compressed pushes
(torch reference decoding, convergence per codec), dedicated server ranks
under torchrun. CPU, 2-4 ranks. Failures (malformed pushes, killed or stopped
ranks): test_ps_failures.py."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import torch_distx  # noqa: F401
from torch_distx import ps
from distx_testing import run_ranks

pytestmark = pytest.mark.timeout(240)

DIM = 6


def _data(rank: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(n, DIM, generator=g)
    w_true = torch.arange(1.0, DIM + 1) / DIM
    y = x @ w_true + 0.1 * rank + 0.01 * torch.randn(n, generator=g)
    return x, y


def _optimum(world: int) -> torch.Tensor:
    """Least squares over every rank's data (with bias): the sum of the ranks' losses' optimum."""
    xs, ys = zip(*(_data(r) for r in range(world)))
    x = torch.cat([torch.cat(xs), torch.ones(sum(len(t) for t in ys), 1)], 1).double()
    y = torch.cat(ys).double()
    return torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1).float()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(DIM, 1)


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((model(x).squeeze(1) - y) ** 2).mean()


def _sum_hook(state, bucket):
    """DDP comm hook: all-reduce SUM (the reference for the summed update)."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0])


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


# ----------------------------------------------------------------- refusals

def _refusals(rank, world):
    out = []

    class WithBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("count", torch.zeros(1))

        def forward(self, x):
            return self.lin(x)

    cases = {
        "broadcast_buffers": lambda: DDP(WithBuffer()),
        "find_unused": lambda: DDP(torch.nn.Linear(2, 2), find_unused_parameters=True),
    }
    for name, make in cases.items():
        m = make()
        try:
            ps.attach(m, torch.optim.SGD(m.parameters(), lr=0.1))
            out.append((name, None))
        except ValueError as e:
            out.append((name, str(e)))
    try:
        ps.attach(torch.nn.Linear(2, 2), None)
    except TypeError as e:
        out.append(("not_ddp", str(e)))
    m = DDP(torch.nn.Linear(2, 2), broadcast_buffers=False)
    for kw in ({"mode": "bogus"}, {"staleness": -2}, {"compression": "gzip"},
               {"compression": "topk:1.5"}, {"compression": "topk"}):
        try:
            ps.attach(m, torch.optim.SGD(m.parameters(), lr=0.1), **kw)
        except ValueError as e:
            out.append((str(kw), str(e)))
    try:
        ps.attach(m, torch.optim.RMSprop(m.parameters(), lr=0.1), mode="server")
    except ValueError as e:
        out.append(("rmsprop", str(e)))
    return out


def test_attach_refuses_ddp_settings_that_synchronise_every_step():
    res = run_ranks(_refusals, 2)
    got = dict(res[0])
    assert "broadcast_buffers" in got["broadcast_buffers"]
    assert "find_unused_parameters" in got["find_unused"]
    assert "DistributedDataParallel" in got["not_ddp"]
    assert "mode" in got["{'mode': 'bogus'}"]
    assert "staleness" in got["{'staleness': -2}"]
    assert "compression" in got["{'compression': 'gzip'}"]
    assert "ratio" in got["{'compression': 'topk:1.5'}"]
    assert "topk:<ratio>" in got["{'compression': 'topk'}"]
    assert "RMSprop" in got["rmsprop"]


# ------------------------------------------------- convergence and exactness

def _train_ps(rank, world, staleness, steps, lr, mode="delta", jitter=0.0, opt_name="sgd",
              same_data=False, compression=None):
    model = DDP(_model(), forward_sync_buffers=False)
    opt = (torch.optim.SGD(model.parameters(), lr=lr, momentum=0.5) if opt_name == "sgd"
           else torch.optim.Adam(model.parameters(), lr=lr))
    if mode == "delta":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    handle = ps.attach(model, opt, mode=mode, staleness=staleness, chunk_bytes=12,  # 3 chunks
                       compression=compression)
    # A decaying lr: with a constant one the worker that finishes last pulls the
    # parameters towards its own optimum in its last (up to s+1) steps.
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.98)
    x, y = _data(0 if same_data else rank)
    g = torch.Generator().manual_seed(rank)
    for _ in range(steps):
        if jitter and torch.rand(1, generator=g).item() < 0.3:
            time.sleep(jitter)
        loss = _loss(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    log = handle.reply_log()
    if compression is not None:
        log = handle.client.pushed_bytes()
    handle.detach()
    return _flat(model), log


def _convergence(rank, world):
    out = {}
    for s in (0, 2, -1):
        # Asynchronous: a faster worker's loss weighs more, without bound, so every
        # worker gets the same data there and the optimum does not depend on the pace.
        w, log = _train_ps(rank, world, s, 150, 0.1, jitter=0.002 * rank, same_data=s < 0)
        out[s] = (w, max((c - m for c, m in log), default=0))
    return out


def test_convex_problem_converges_for_every_staleness_and_honours_the_bound():
    world = 3
    res = run_ranks(_convergence, world)
    best = _optimum(world)
    for s in (0, 2, -1):
        ws = [r[s][0] for r in res]
        for w in ws[1:]:
            assert torch.equal(w, ws[0]), "detach() must leave every rank bit-identical"
        assert torch.allclose(ws[0], best if s >= 0 else _optimum(1), atol=1e-2), (s, ws[0], best)
        if s >= 0:
            for r in res:
                assert r[s][1] <= s, f"s={s}: a reply's clock ran {r[s][1]} ahead of the minimum"


# -------------------------------------------------------------- compression

def _reference_decode(u: torch.Tensor, codec: str, residual: torch.Tensor, chunk: int) -> torch.Tensor:
    """What the shard adds for one push of `u`, computed with torch (residual: in/out)."""
    if codec == "fp16":
        return u.half().float()
    if codec == "bf16":
        return u.bfloat16().float()
    ratio = float(codec.split(":")[1])
    out = torch.zeros_like(u)
    for b in range(0, u.numel(), chunk):
        a = u[b:b + chunk] + residual[b:b + chunk]
        k = max(1, min(a.numel(), int(ratio * a.numel() + 0.5)))
        idx = a.abs().topk(k).indices
        out[b:b + chunk][idx] = a[idx]
        a[idx] = 0.0
        residual[b:b + chunk] = a
    return out


def _compressed_values(rank, world):
    out = {}
    n, chunk = 25, 10
    for codec in ("fp16", "bf16", "topk:0.2"):
        params = [torch.zeros(n)]
        client = ps.connect(params, staleness=0, chunk_bytes=4 * chunk, compression=codec)
        server = torch.zeros(n)
        residuals = [torch.zeros(n) for _ in range(world)]
        for step in range(3):
            ups = [torch.randn(n, generator=torch.Generator().manual_seed(10 * step + w)) * 100
                   for w in range(world)]
            client.push(ups[rank])
            client.wait()  # s = 0: holds every worker's push of this clock
            for w in range(world):
                server += _reference_decode(ups[w], codec, residuals[w], chunk)
            out[(codec, step)] = (params[0].clone(), server.clone())
        out[codec] = client.pushed_bytes()
        client.close()
    return out


def test_compressed_pushes_apply_the_torch_reference_decoding():
    world = 2
    res = run_ranks(_compressed_values, world)
    for codec, ratio in (("fp16", 0.5), ("bf16", 0.5), ("topk:0.2", 0.4)):
        for r in res:
            for step in range(3):
                got, ref = r[(codec, step)]
                # The shard adds the workers' pushes in arrival order: fp32 rounding only.
                assert torch.allclose(got, ref, rtol=1e-6, atol=1e-4), (codec, step, got - ref)
                assert not torch.equal(ref, torch.zeros_like(ref))
            pushed, raw = r[codec]
            assert raw == 3 * 25 * 4 and pushed == int(raw * ratio), (codec, pushed, raw)


def _compressed_convergence(rank, world):
    out = {}
    for codec in ("fp16", "bf16", "topk:0.34"):
        out[codec] = _train_ps(rank, world, 2, 200, 0.1, jitter=0.002 * rank, compression=codec)
    return out


def test_convex_problem_converges_with_every_codec():
    world = 3
    res = run_ranks(_compressed_convergence, world)
    best = _optimum(world)
    for codec in ("fp16", "bf16", "topk:0.34"):
        ws = [r[codec][0] for r in res]
        for w in ws[1:]:
            assert torch.equal(w, ws[0]), "detach() must leave every rank bit-identical"
        assert torch.allclose(ws[0], best, atol=1e-2), (codec, ws[0], best)
        pushed, raw = res[0][codec][1]
        assert pushed < raw, (codec, pushed, raw)


def _make_opt(model, lr, opt_name, momentum, wd):
    if opt_name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                               weight_decay=wd)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)


def _trajectory(model, opt, rank, steps, after_step=None) -> list[torch.Tensor]:
    """The flat parameters after each of `steps` full-batch steps on rank's
    data; after_step() runs between the optimizer step and the snapshot."""
    x, y = _data(rank)
    traj = []
    for _ in range(steps):
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad()
        if after_step is not None:
            after_step()
        traj.append(_flat(model))
    return traj


def _ddp_summed(rank, world, steps, lr, opt_name, momentum=0.0, wd=0.01):
    model = DDP(_model(), forward_sync_buffers=False)
    model.register_comm_hook(None, _sum_hook)
    return _trajectory(model, _make_opt(model, lr, opt_name, momentum, wd), rank, steps)


def _ps_traj(rank, world, steps, lr, mode, opt_name, momentum=0.0, wd=0.01):
    model = DDP(_model(), forward_sync_buffers=False)
    opt = _make_opt(model, lr, opt_name, momentum, wd)
    handle = ps.attach(model, opt, mode=mode, staleness=0)
    traj = _trajectory(model, opt, rank, steps, after_step=handle.sync)
    handle.detach()
    return traj


def _sync_equals_ddp(rank, world):
    out = {}
    # delta mode with plain SGD: the server adds -lr*g_w of every worker.
    out["delta"] = (_ps_traj(rank, world, 20, 0.05, "delta", "sgd", wd=0.0),
                    _ddp_summed(rank, world, 20, 0.05, "sgd", wd=0.0))
    out["server-sgd"] = (_ps_traj(rank, world, 20, 0.05, "server", "sgd", momentum=0.9),
                         _ddp_summed(rank, world, 20, 0.05, "sgd", momentum=0.9))
    out["server-adamw"] = (_ps_traj(rank, world, 20, 0.05, "server", "adamw"),
                           _ddp_summed(rank, world, 20, 0.05, "adamw"))
    return out


def test_staleness_zero_equals_ddp_on_the_summed_gradient():
    res = run_ranks(_sync_equals_ddp, 3)
    for name in ("delta", "server-sgd", "server-adamw"):
        for r in res:
            got, ref = r[name]
            # Adam divides by sqrt(v): where a gradient is near 0 the summation-order
            # rounding of the summed gradient (all-reduce vs shard) is amplified.
            atol = 3e-4 if "adam" in name else 1e-6
            for t, (a, b) in enumerate(zip(got, ref)):
                assert torch.allclose(a, b, rtol=1e-5, atol=atol), (name, t, a, b)


# --------------------------------------------------------------- checkpoint

def _checkpoint(rank, world):
    model = DDP(_model(), forward_sync_buffers=False)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    handle = ps.attach(model, opt, mode="server", staleness=0)
    x, y = _data(rank)

    def steps(n):
        for i in range(n):
            _loss(model, x * (1 + 0.1 * i), y).backward()
            opt.step()
            opt.zero_grad()
        handle.sync()
        return _flat(model)

    steps(3)
    state = handle.state_dict()
    a = steps(4)
    handle.load_state_dict(state)
    restored = _flat(model)
    b = steps(4)
    clock = handle.clock
    handle.detach()
    return a, b, restored, clock, state["chunks"][0][:4 * 7]


def test_checkpoint_restore_continues_identically():
    res = run_ranks(_checkpoint, 2)
    for a, b, restored, clock, saved in res:
        assert torch.equal(a, b)
        assert torch.equal(restored, torch.frombuffer(bytearray(saved), dtype=torch.float32))
        assert clock == 7


# -------------------------------------------- dedicated servers under torchrun

_DEDICATED = '''
import json, os, sys
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import torch_distx
from torch_distx import ps

sys.path.insert(0, sys.argv[1])
from test_ps import _data, _loss, _model, _flat

dist.init_process_group("distx")  # env:// from torchrun
rank, world = dist.get_rank(), dist.get_world_size()
out = {}
# (servers, mode, staleness, compression): 1 server + 3 workers, 2 servers + 2 workers.
for servers, mode, s, codec in ((1, "delta", 2, None), (2, "server", 0, "fp16")):
    group = ps.worker_group(servers)  # every rank
    if rank >= world - servers:
        stats = ps.serve(servers)
        out[servers] = {"served": stats["applied"], "rejected": stats["rejected"]}
        continue
    model = DDP(_model(), process_group=group, broadcast_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5 if mode == "server" else 0.0)
    handle = ps.attach(model, opt, mode=mode, staleness=s, servers=servers, chunk_bytes=12,
                       compression=codec)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.98)
    x, y = _data(rank)
    for step in range(150 + 2 * rank):  # workers stop after different numbers of steps
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    log = handle.reply_log()
    handle.detach()
    # Synchronous DDP again on the worker group: one more all-reduced step keeps replicas equal.
    _loss(model, x, y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.zero_grad()
    out[servers] = {"params": _flat(model).tolist(), "gap": max(c - m for c, m in log),
                    "grads": torch.cat([g.reshape(-1) for g in grads]).tolist()}
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
'''


@pytest.mark.timeout(200)
def test_dedicated_servers_under_torchrun_converge_and_detach_bit_identical(tmp_path):
    """torchrun, 4 ranks: 1 dedicated server + 3 DDP workers (delta, s=2), then
    2 servers + 2 workers (server-side SGD, s=0, fp16 pushes). Workers stop after
    different step counts; detach() leaves them bit-identical, at the optimum."""
    import json
    import subprocess
    import sys

    from distx_testing import free_port

    script = tmp_path / "dedicated.py"
    script.write_text(_DEDICATED)
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=4",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", str(script), here, str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=170)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish; output:\n{text}", pytrace=False)
    assert proc.returncode == 0, text
    res = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(4)]
    for servers in (1, 2):
        key = str(servers)
        workers = list(range(4 - servers))
        for r in range(4 - servers, 4):
            assert res[r][key]["rejected"] == 0 and res[r][key]["served"] > 0, res[r][key]
        w0 = res[0][key]
        for r in workers[1:]:
            assert res[r][key]["params"] == w0["params"], f"servers={servers}: rank {r} differs"
            assert res[r][key]["grads"] == w0["grads"], f"servers={servers}: DDP after detach"
        best = _optimum(len(workers))
        assert torch.allclose(torch.tensor(w0["params"]), best, atol=1e-2), (servers, w0["params"], best)
        s = 2 if servers == 1 else 0
        for r in workers:
            assert res[r][key]["gap"] <= s
