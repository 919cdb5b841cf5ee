"""DDP comm hooks of torch_distx.hooks under real DDP, 2-4 processes, on
backends "gloo" and "distx". Every rank recomputes every rank's local gradient
(inputs are closed-form in rank and step) and builds the expected all-reduced
gradient by hand: top-k selection by a stable sort, residuals per parameter,
the dense-fallback rules, and fp16/bf16 error bounds."""

from __future__ import annotations

import copy
import datetime
import multiprocessing as mp
import os
import pickle
import time
import traceback

import pytest

from distx_testing import free_port

RATIO = 0.05
STEPS = 4
# Initially DDP puts a.bias alone in bucket 0; after the first step it rebuilds
# to [b.bias, b.weight, a.bias] + [a.weight]: parameters move between buckets.
MULTI_BUCKET = {"bucket_cap_mb_list": [0.002, 0.004, 0.01]}


def _run(nproc: int, backend: str, scenarios: list[str], timeout: float = 150.0) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, nproc, port, backend, scenarios, q)) for r in range(nproc)]
    for p in procs:
        p.start()
    results = {}
    deadline = time.time() + timeout
    while len(results) < nproc and time.time() < deadline:
        try:
            rank, value = q.get(timeout=1.0)
            results[rank] = value
        except Exception:
            if any(p.exitcode not in (None, 0) for p in procs):
                break
    for p in procs:
        p.join(max(0.1, deadline - time.time()))
        if p.is_alive():
            p.kill()
    assert len(results) == nproc, f"only ranks {sorted(results)} reported; exit codes {[p.exitcode for p in procs]}"
    return results


# ---------------------------------------------------------------- worker side

def _net():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Linear(64, 8)  # registered first, used last
            self.a = nn.Linear(32, 64)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    return Net()


def _batch(rank: int, step: int):
    import torch

    i = torch.arange(6 * 32, dtype=torch.float32).view(6, 32)
    x = torch.sin(i * (0.37 + 0.11 * rank) + step)
    y = torch.cos(torch.arange(6 * 8, dtype=torch.float32).view(6, 8) * (0.5 + rank) - step)
    return x, y


def _local_grads(model, rank: int, step: int, loss_scale: float = 1.0) -> dict:
    x, y = _batch(rank, step)
    model.zero_grad(set_to_none=True)
    ((model(x) - y).square().sum() * loss_scale).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _train(rank, world, state, hook, ddp_kwargs, steps=STEPS, scale_of=lambda rank, step: 1.0, module=None):
    """Runs DDP with `hook`; returns per step the bucket layouts seen (names) and the
    reduced gradients, plus a pristine copy of the module for the oracle."""
    import torch.distributed as dist  # noqa: F401
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = module if module is not None else _net()
    reference = copy.deepcopy(model)
    names = {p.data_ptr(): n for n, p in model.named_parameters()}
    ddp = DDP(model, **ddp_kwargs)
    layouts: list[list[list[str]]] = []

    def recording_hook(state, bucket):
        if bucket.index() == 0:
            layouts.append([])
        layouts[-1].append([names[p.data_ptr()] for p in bucket.parameters()])
        return hook(state, bucket)

    ddp.register_comm_hook(state, recording_hook)
    grads = []
    for step in range(steps):
        x, y = _batch(rank, step)
        model.zero_grad(set_to_none=True)
        ((ddp(x) - y).square().sum() * scale_of(rank, step)).backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    return layouts, grads, reference


def _all_local(reference, world, step, scale_of=lambda rank, step: 1.0):
    return [_local_grads(reference, r, step, scale_of(r, step)) for r in range(world)]


def _oracle_topk(a, k):
    import torch

    key = (a.view(torch.int32) & 0x7FFFFFFF).long()
    return torch.sort(key, descending=True, stable=True).indices[:k].sort().values


def _expect_topk(world, layouts, reference, *, ratio, ef, warmup, min_numel, residual=None, steps=STEPS):
    """Yields (step, expected {name: grad}, exact?) by hand: per bucket, the
    documented dense rules or top-k of grad + residual with residuals per parameter."""
    import torch

    from torch_distx.ops import topk_count

    res = residual if residual is not None else [{} for _ in range(world)]
    for step in range(steps):
        local = _all_local(reference, world, step)
        expected, exact = {}, {}
        for names in layouts[step]:
            sizes = [local[0][nm].numel() for nm in names]
            n = sum(sizes)
            k = topk_count(n, ratio)
            flat = [torch.cat([(local[r][nm] + res[r].get(nm, torch.zeros_like(local[r][nm]))).reshape(-1)
                               if ef else local[r][nm].reshape(-1) for nm in names]) for r in range(world)]
            if step < warmup or n < min_numel or k * world >= n:
                dense = sum(flat) / world
                if ef:
                    for r in range(world):
                        for nm in names:
                            res[r][nm] = torch.zeros_like(local[r][nm])
                is_exact = False
            else:
                dense = torch.zeros(n)
                for r in range(world):
                    idx = _oracle_topk(flat[r], k)
                    dense.index_add_(0, idx, flat[r][idx] * (1.0 / world))
                    if ef:
                        left = flat[r].clone()
                        left[idx] = 0.0
                        for nm, piece in zip(names, left.split(sizes)):
                            res[r][nm] = piece.view_as(local[r][nm])
                is_exact = True
            for nm, piece in zip(names, dense.split(sizes)):
                expected[nm] = piece.view_as(local[0][nm])
                exact[nm] = is_exact
        yield step, expected, exact


def _compare(got: dict, expected: dict, exact: dict, what: str):
    import torch

    for nm, e in expected.items():
        if exact[nm]:
            assert torch.equal(got[nm], e), f"{what} {nm}: max diff {(got[nm] - e).abs().max()}"
        else:
            torch.testing.assert_close(got[nm], e, rtol=1e-5, atol=1e-6, msg=f"{what} {nm}")


def _sc_topk_ef(rank, world):
    """Error feedback from step 0, through DDP's bucket rebuild (parameters move buckets)."""
    from torch_distx.hooks import TopKState, topk_hook
    from torch_distx.hooks._stats import ring_allgather_bytes, ring_allreduce_bytes
    from torch_distx.ops import topk_count

    state = TopKState(ratio=RATIO, warmup_steps=0, min_numel=0)
    layouts, grads, ref = _train(rank, world, state, topk_hook, MULTI_BUCKET)
    assert layouts[0] != layouts[1], "the test needs DDP to rebuild its buckets"
    dense = sent = 0
    for step, expected, exact in _expect_topk(world, layouts, ref, ratio=RATIO, ef=True, warmup=0, min_numel=0):
        assert all(exact.values())
        _compare(grads[step], expected, exact, f"step {step}")
    for names in sum(layouts, []):
        n = sum(dict(ref.named_parameters())[nm].numel() for nm in names)
        dense += ring_allreduce_bytes(4 * n, world)
        sent += ring_allgather_bytes(8 * topk_count(n, RATIO), world)
    st = state.stats
    assert (st.steps, st.dense_bytes, st.sent_bytes, st.dense_fallbacks) == (STEPS, dense, sent, {})
    assert st.compression_ratio == dense / sent and st.compression_ratio > 3
    assert st.bytes_sent_per_step == sent / STEPS and st.compress_seconds > 0
    assert state.residual_norm() > 0


def _sc_topk_rules(rank, world):
    """Warmup steps and small buckets go dense; the rest is top-k with EF."""
    from torch_distx.hooks import TopKState, topk_hook

    state = TopKState(ratio=RATIO, warmup_steps=2, min_numel=1000)
    layouts, grads, ref = _train(rank, world, state, topk_hook, MULTI_BUCKET)
    for step, expected, exact in _expect_topk(world, layouts, ref, ratio=RATIO, ef=True, warmup=2,
                                              min_numel=1000):
        _compare(grads[step], expected, exact, f"step {step}")
    small = sum(1 for names in sum(layouts[2:], []) if "a.weight" not in names)
    warm = len(layouts[0]) + len(layouts[1])
    assert state.stats.dense_fallbacks == {"warmup": warm, "small_bucket": small}


def _sc_topk_no_ef(rank, world):
    from torch_distx.hooks import TopKState, topk_hook

    state = TopKState(ratio=RATIO, error_feedback=False, warmup_steps=0, min_numel=0)
    layouts, grads, ref = _train(rank, world, state, topk_hook, MULTI_BUCKET)
    for step, expected, exact in _expect_topk(world, layouts, ref, ratio=RATIO, ef=False, warmup=0, min_numel=0):
        _compare(grads[step], expected, exact, f"step {step}")
    assert state.residual_norm() == 0


def _sc_topk_density(rank, world):
    """k * P >= n: the all-gather would send more than a ring all-reduce."""
    from torch_distx.hooks import TopKState, topk_hook

    ratio = 0.5  # k >= n/2, so k * P >= n for every P >= 2
    state = TopKState(ratio=ratio, warmup_steps=0, min_numel=0)
    layouts, grads, ref = _train(rank, world, state, topk_hook, {}, steps=2)
    for step, expected, exact in _expect_topk(world, layouts, ref, ratio=ratio, ef=True, warmup=0, min_numel=0,
                                              steps=2):
        assert not any(exact.values())
        _compare(grads[step], expected, exact, f"step {step}")
    assert state.stats.dense_fallbacks == {"density": 2}
    assert state.stats.compression_ratio == 1.0


def _sc_topk_checkpoint(rank, world):
    """Pickling the state mid-run and continuing under a new DDP wrapper gives
    the same gradients as an uninterrupted run."""
    import torch
    from torch import nn

    from torch_distx.hooks import TopKState, topk_hook

    def module():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(32, 8, bias=False))  # one parameter: one stable layout

    def run(split: bool):
        state = TopKState(ratio=RATIO, warmup_steps=0, min_numel=0)
        m = module()
        _, g1, _ = _train(rank, world, state, topk_hook, {}, steps=2, module=m)
        if split:
            state = pickle.loads(pickle.dumps(state))
            assert state.step == 2 and state.stats.steps == 2
        _, g2, _ = _train_from(rank, world, state, m, first_step=2)
        return g1 + g2, state

    full, s_full = run(False)
    resumed, s_resumed = run(True)
    for step, (a, b) in enumerate(zip(full, resumed)):
        for nm in a:
            assert torch.equal(a[nm], b[nm]), f"step {step} {nm}"
    assert s_resumed.stats.steps == s_full.stats.steps == 4


def _train_from(rank, world, state, model, first_step):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from torch_distx.hooks import topk_hook

    ddp = DDP(model)
    ddp.register_comm_hook(state, topk_hook)
    grads = []
    for step in range(first_step, first_step + 2):
        x, _ = _batch(rank, step)
        model.zero_grad(set_to_none=True)
        ddp(x).square().sum().backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    return None, grads, None


def _check_cast(rank, world, hook_name, eps, lowp, scale_of=lambda rank, step: 1.0, expect_fallbacks=None):
    import torch

    import torch_distx.hooks as hooks
    from torch_distx.hooks._stats import ring_allreduce_bytes

    state = hooks.CastState()
    layouts, grads, ref = _train(rank, world, state, getattr(hooks, hook_name), MULTI_BUCKET, scale_of=scale_of)
    for step in range(STEPS):
        local = _all_local(ref, world, step, scale_of)
        for nm, got in grads[step].items():
            mean = sum(g[nm] for g in local) / world
            # each term rounded once, each partial sum at most once more
            bound = 2 * world * eps * sum(g[nm].abs() for g in local) / world + 1e-30
            assert torch.all((got - mean).abs() <= bound), f"step {step} {nm}"
            if not (expect_fallbacks and step in expect_fallbacks):
                assert torch.equal(got, got.to(lowp).float()), f"step {step} {nm}: not a {lowp} value"
            else:
                torch.testing.assert_close(got, mean, rtol=1e-5, atol=1e-3)
    nb = sum(len(lay) for lay in layouts)
    assert state.stats.buckets == nb and state.stats.steps == STEPS
    assert state.stats.dense_bytes == sum(ring_allreduce_bytes(4 * sum(ref.get_parameter(nm).numel() for nm in names),
                                                               world) for names in sum(layouts, []))
    extra = 0
    if expect_fallbacks:
        assert state.stats.dense_fallbacks == {"overflow": sum(len(layouts[s]) for s in expect_fallbacks)}
        extra = sum(ring_allreduce_bytes(4 * sum(ref.get_parameter(nm).numel() for nm in names), world)
                    for s in expect_fallbacks for names in layouts[s])
    else:
        assert state.stats.dense_fallbacks == {}
    half = sum(ring_allreduce_bytes(2 * sum(ref.get_parameter(nm).numel() for nm in names), world)
               for names in sum(layouts, []))
    assert state.stats.sent_bytes == half + extra


def _sc_fp16(rank, world):
    import torch

    _check_cast(rank, world, "fp16_hook", 2.0**-11, torch.float16)


def _sc_bf16(rank, world):
    import torch

    _check_cast(rank, world, "bf16_hook", 2.0**-8, torch.bfloat16)


def _sc_fp16_overflow(rank, world):
    """Step 1 on the last rank has gradients beyond fp16's range: those buckets
    are re-sent in fp32, and the result is the dense mean, not inf."""
    import torch

    def scale_of(r, step):
        return 1e7 if (step == 1 and r == world - 1) else 1.0

    _check_cast(rank, world, "fp16_hook", 2.0**-11, torch.float16, scale_of, expect_fallbacks={1})


SCENARIOS = {name[4:]: fn for name, fn in globals().items() if name.startswith("_sc_")}


def _worker(rank, world, port, backend, scenarios, q):
    try:
        import torch
        import torch.distributed as dist

        import torch_distx  # noqa: F401

        torch.set_num_threads(1)
        store = dist.TCPStore("127.0.0.1", port, world, rank == 0, timeout=datetime.timedelta(seconds=60))
        dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=60))
        out = {}
        for name in scenarios:
            try:
                SCENARIOS[name](rank, world)
                out[name] = "ok"
            except Exception:
                out[name] = traceback.format_exc()
            dist.barrier()
        dist.destroy_process_group()
        q.put((rank, out))
    except Exception:
        q.put((rank, {"worker": traceback.format_exc()}))


# ---------------------------------------------------------------- tests

ALL = list(SCENARIOS)


@pytest.mark.parametrize("backend,world", [("gloo", 2), ("distx", 2), ("gloo", 3), ("distx", 4)])
def test_hooks_match_hand_computed_reference(backend, world):
    results = _run(world, backend, ALL)
    failures = {f"rank {r} {name}": tb for r, out in results.items() for name, tb in out.items() if tb != "ok"}
    assert not failures, "\n".join(f"--- {k}\n{v}" for k, v in failures.items())
    assert all(set(out) == set(ALL) for out in results.values())


def test_state_validation_and_pickle_without_group():
    from torch_distx.hooks import CastState, TopKState

    with pytest.raises(ValueError):
        TopKState(ratio=0.0)
    with pytest.raises(ValueError):
        TopKState(warmup_steps=-1)
    s = pickle.loads(pickle.dumps(TopKState(ratio=0.1, error_feedback=False, warmup_steps=3, min_numel=7)))
    assert (s.ratio, s.error_feedback, s.warmup_steps, s.min_numel, s.process_group) == (0.1, False, 3, 7, None)
    c = pickle.loads(pickle.dumps(CastState()))
    assert c.stats.steps == 0 and c.process_group is None


def test_state_round_trips_through_torch_save(tmp_path):
    import torch

    from torch_distx.hooks import CompressionStats, TopKState

    s = TopKState(ratio=0.05)
    s.step = 7
    s._residuals[0] = (torch.arange(3.0), (((3,),), (1234,)))
    torch.save(s, tmp_path / "state.pt")
    torch.serialization.add_safe_globals([TopKState, CompressionStats])
    t = torch.load(tmp_path / "state.pt")
    assert t.step == 7 and t.ratio == 0.05
    residual, shapes = t._restored[0]
    assert torch.equal(residual, torch.arange(3.0)) and shapes == ((3,),)
