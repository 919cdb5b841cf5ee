"""Which ranks of a distx process group share a host (Note [Topology] in
csrc/common/topology.cpp).

    >>> import torch_distx
    >>> torch_distx.topology()          # the default group
    {'rank': 0, 'size': 4, 'nodes': [[0, 1], [2, 3]], 'num_nodes': 2, 'node': 0,
     'local_rank': 0, 'local_size': 2, 'uniform': True, 'ranks_per_node': 2,
     'leaders': [0, 2], 'flat': False, 'describe': '2 nodes x 2 ranks [0,1] [2,3]',
     'hosts': [...], 'notes': []}

Ranks share a node when their host ids agree: a hash of hostname and
/proc/sys/kernel/random/boot_id, or of ``DISTX_HOSTID`` where it is set. Each
group (``new_group`` sub-groups too) has its own map, all-gathered through its
store when it is created.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import distributed_c10d as c10d

__all__ = ["local_host", "topology"]


def topology(group: dist.ProcessGroup | None = None) -> dict[str, Any]:
    """The node map of a distx group, as every rank of it agreed on at creation.

    ``flat`` is True when hierarchy has nothing to win (one host, or one rank per
    host); ``uniform`` when every host holds the same number of ranks (the
    split-rail all-reduce needs it); ``notes`` lists what the exchange noticed
    (ranks claiming one host from different machines, uneven hosts).
    """
    from . import _C

    if c10d._rank_not_in_group(group):
        raise ValueError("torch_distx.topology: this rank is not in the group")
    pg = group or c10d._get_default_group()
    backend = pg._get_backend(torch.device("cpu"))
    return _C._topology(backend)


def local_host() -> dict[str, Any]:
    """This process's host record: hostname, host id, boot id (hashed), and
    whether the host id came from DISTX_HOSTID."""
    from . import _C

    return _C._local_host()
