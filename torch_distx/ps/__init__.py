"""Parameter-server mode: asynchronous and bounded-staleness training.

With DDP unchanged apart from one call::

    dist.init_process_group("distx")
    model = DDP(model, broadcast_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ps = torch_distx.ps.attach(model, opt, mode="delta", staleness=2)
    for x, y in loader:
        loss = ...; loss.backward(); opt.step(); opt.zero_grad()
    ps.detach()          # back to synchronous DDP, every rank with the server's parameters

Modes: ``"delta"`` (the local optimizer steps; the worker pushes its parameter
delta and the shard adds it) and ``"server"`` (the worker pushes gradients; the
shard runs SGD/Adam/AdamW in C++ with the lr of each push). ``staleness=s``: a
pull for clock c returns once the slowest live worker reached c - s (0 is
synchronous SGD on the summed update, -1 fully asynchronous). Shards are
colocated in the ranks (``servers=0``) or the last K ranks of the world run
only :func:`serve`. See docs/ps.md.

Modules: ``_config`` (roles, compression spec, the shards' optimizer),
``_node`` (building the C++ node, a collective), ``_client`` (:class:`PsClient`,
push/pull), ``_checkpoint`` (state dicts, a chunk's layout), ``_ddp``
(:func:`attach`, :class:`ParameterServer`), ``_serve`` (:func:`serve`).
"""

from ._client import PsClient, connect
from ._config import parse_compression, roles, worker_group
from ._ddp import ParameterServer, attach
from ._serve import serve

__all__ = ["ParameterServer", "PsClient", "attach", "connect", "serve", "worker_group", "roles",
           "parse_compression"]
