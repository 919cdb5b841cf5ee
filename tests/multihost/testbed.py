"""A multi-host testbed on one machine: n network namespaces, each a "host".

    with Testbed(hosts=2, rate="1gbit") as tb:
        runs = tb.torchrun("train.py", nproc_per_host=2, env={...})
        print(tb.tx_bytes())            # bytes each host sent over its link

Layout (all of it inside namespaces; the machine's own network is untouched):

    <prefix>-<pid>-<i>-sw     a "switch": one bridge, br0
    <prefix>-<pid>-<i>-h<k>   host k: eth0 = 10.213.0.<k+1>/24, one veth pair to br0

Each host's link is throttled in both directions with a token bucket
(`tc qdisc ... tbf rate R`): on eth0 (the host's egress) and on the switch's
port towards the host (its ingress), so the link is full duplex at R, as a NIC.
tbf and htb work on the CI kernels; netem, fq and cake do not.

Processes of host k run as

    ip netns exec NS unshare --uts --mount --propagation private sh -c ...

with their own hostname (`<prefix>-h<k>`, which /etc/hosts, bind-mounted
too, resolves to the host's address for every host, as on a cluster: gloo
binds to the address its hostname resolves to) and their own
/proc/sys/kernel/random/boot_id (a file bind-mounted over it inside the mount
namespace). UCX's shared-memory transports treat peers with the same boot id
as one machine: without a boot id per host, "cross-host" data would move by
CMA/shared memory and never touch the throttled link. Ranks of one host still
share memory, as on a real machine.

Cleanup is guaranteed: close() (context-manager exit, atexit, SIGINT/SIGTERM/
SIGHUP) kills every process started here and deletes the namespaces, which
removes the veths and the bridge with them. Namespaces of a testbed whose
owner died without cleaning (SIGKILL) are removed by the next testbed's start:
the owner's pid is part of every name.

Needs root, iproute2 (ip, tc) and util-linux (unshare, mount);
unavailable_reason() says what is missing, for tests to skip on.

CLI (python tests/multihost/testbed.py -h):
    testbed.py run [--hosts 2] [--rate 1gbit] -- CMD ARGS   CMD on every host
    testbed.py torchrun --nproc-per-host 2 -- SCRIPT ARGS    torchrun on every host
    testbed.py up                                            create, wait for Ctrl-C
    testbed.py cleanup                                       remove stale testbeds
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

__all__ = ["HostRun", "Testbed", "cleanup_stale", "parse_rate", "unavailable_reason"]

DEFAULT_PREFIX = "dxtb"
SUBNET = "10.213.0"  # private, and only ever configured inside the namespaces
_counter = itertools.count()
_TOOLS = ("ip", "tc", "unshare", "mount", "sh")

# sh -c body run inside the host's fresh UTS + mount namespaces:
# $0 = hostname, $1 = boot-id file, $2 = hosts file, $3... = the command.
_HOST_SHIM = ('echo "$0" > /proc/sys/kernel/hostname && '
              'mount --bind "$1" /proc/sys/kernel/random/boot_id && '
              'mount --bind "$2" /etc/hosts && shift 2 && exec "$@"')


def unavailable_reason() -> str | None:
    """Why a testbed cannot be built here, or None if it can."""
    if sys.platform != "linux":
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc, bind mounts)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return "missing tools: " + ", ".join(missing) + " (iproute2, util-linux)"
    return None


def parse_rate(rate: str) -> float:
    """tc rate ('1gbit', '100mbit', '500kbit', '1000000bit') in bits per second."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)bit", rate.strip().lower())
    if not m:
        raise ValueError(f"rate must look like 1gbit, 100mbit or 500kbit; got {rate!r}")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def _tc(*args: str) -> None:
    out = subprocess.run(["tc", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)} failed: {out.stderr.strip()}")


def _netns_list() -> list[str]:
    out = _ip("netns", "list", check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _kill_netns_pids(ns: str) -> None:
    out = _ip("netns", "pids", ns, check=False)
    for pid in out.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _delete_netns(ns: str) -> None:
    _kill_netns_pids(ns)
    _ip("netns", "del", ns, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete namespaces left by testbeds whose owning process is gone; returns their names."""
    removed = []
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-\d+-(sw|h\d+)$")
    for ns in _netns_list():
        m = pattern.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _delete_netns(ns)
            removed.append(ns)
    for d in tempfile.gettempdir(), :
        for name in os.listdir(d):
            m = re.match(rf"^{re.escape(prefix)}-(\d+)-\d+-", name)
            if m and not _pid_alive(int(m.group(1))):
                shutil.rmtree(os.path.join(d, name), ignore_errors=True)
    return removed


@dataclass
class HostRun:
    """What one host's command did."""

    host: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Testbed:
    """n hosts on a bridge, each link throttled to `rate` (None: unthrottled).

    burst/latency are tbf's; the defaults (burst ~1 ms of traffic, at least
    64 KiB; queue 20 ms) keep a TCP stream at ~95 % of the rate on the wire.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, hosts: int = 2, rate: str | None = "1gbit", *, prefix: str = DEFAULT_PREFIX,
                 mtu: int = 1500, burst: str | None = None, latency: str = "20ms") -> None:
        if not 1 <= hosts <= 200:
            raise ValueError(f"hosts must be in 1..200; got {hosts}")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", prefix):
            raise ValueError(f"prefix must be 1-8 lowercase letters/digits; got {prefix!r}")
        self.hosts = hosts
        self.prefix = prefix
        self.mtu = mtu
        self.latency = latency
        self.burst = burst
        self.rate: str | None = None
        self._want_rate = rate
        self.name = f"{prefix}-{os.getpid()}-{next(_counter)}"
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._created: list[str] = []
        self._tmp: str | None = None
        self._started = False
        self._closed = False
        self._old_handlers: dict[int, object] = {}

    # ---- names and addresses -------------------------------------------------

    @property
    def switch_ns(self) -> str:
        return f"{self.name}-sw"

    def ns(self, host: int) -> str:
        return f"{self.name}-h{host}"

    def addr(self, host: int) -> str:
        return f"{SUBNET}.{host + 1}"

    def hostname(self, host: int) -> str:
        return f"{self.prefix}-h{host}"

    @property
    def master_addr(self) -> str:
        return self.addr(0)

    # ---- lifecycle ------------------------------------------------------------

    def __enter__(self) -> "Testbed":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "Testbed":
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"testbed unavailable: {reason}")
        if self._started:
            return self
        self._started = True
        cleanup_stale(self.prefix)
        atexit.register(self.close)
        self._install_signal_handlers()
        try:
            self._tmp = tempfile.mkdtemp(prefix=self.name + "-")
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        sw = self.switch_ns
        self._add_ns(sw)
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for k in range(self.hosts):
            ns = self.ns(k)
            self._add_ns(ns)
            # Both ends are created directly inside their namespaces: nothing,
            # not even for a moment, appears in the machine's own namespace.
            _ip("link", "add", "eth0", "netns", ns, "mtu", str(self.mtu), "type", "veth",
                "peer", "name", f"p{k}", "netns", sw, "mtu", str(self.mtu))
            _ip("-n", ns, "addr", "add", f"{self.addr(k)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", sw, "link", "set", f"p{k}", "master", "br0", "up")
            with open(self._boot_id_file(k), "w") as f:
                f.write(str(uuid.uuid4()) + "\n")
        with open(self._hosts_file(), "w") as f:
            f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            for k in range(self.hosts):
                f.write(f"{self.addr(k)}\t{self.hostname(k)}\n")
        if self._want_rate:
            self.set_rate(self._want_rate)

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._created.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        """Kill everything started here and delete the namespaces (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self._procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self._created):
            _delete_netns(ns)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._restore_signal_handlers()
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001  (interpreter shutting down)
            pass

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # atexit and the next start's stale cleanup still cover us
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, old in self._old_handlers.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, old)  # type: ignore[arg-type]
        self._old_handlers.clear()

    def _on_signal(self, sig: int, frame: object) -> None:
        old = self._old_handlers.get(sig, signal.SIG_DFL)
        self.close()
        if callable(old):
            old(sig, frame)  # e.g. SIGINT's KeyboardInterrupt, so finally blocks run
        elif old != signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

    # ---- links ------------------------------------------------------------------

    def set_rate(self, rate: str | None) -> None:
        """Throttle every link to `rate` both ways (None removes the throttle)."""
        links = [(self.ns(k), "eth0") for k in range(self.hosts)]
        links += [(self.switch_ns, f"p{k}") for k in range(self.hosts)]
        for ns, dev in links:
            subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], capture_output=True)
        self.rate = None
        if rate is None:
            return
        bits = parse_rate(rate)
        burst = self.burst or f"{max(64 * 1024, int(bits / 8 / 1000))}b"
        for ns, dev in links:
            _tc("-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", burst,
                "latency", self.latency)
        self.rate = rate

    @property
    def rate_bits(self) -> float | None:
        return parse_rate(self.rate) if self.rate else None

    def tx_bytes(self) -> list[int]:
        """Bytes each host has sent on its link (eth0's counter, L2 headers included)."""
        out = []
        for k in range(self.hosts):
            info = json.loads(_ip("-n", self.ns(k), "-s", "-j", "link", "show", "dev", "eth0").stdout)
            out.append(int(info[0]["stats64"]["tx"]["bytes"]))
        return out

    # ---- processes --------------------------------------------------------------

    def _boot_id_file(self, host: int) -> str:
        assert self._tmp
        return os.path.join(self._tmp, f"boot_id.h{host}")

    def _hosts_file(self) -> str:
        assert self._tmp
        return os.path.join(self._tmp, "hosts")

    def wrap(self, host: int, argv: Sequence[str]) -> list[str]:
        """argv as run on `host`: its netns, hostname and boot id."""
        if not self._started or self._closed:
            raise RuntimeError("testbed is not running")
        return ["ip", "netns", "exec", self.ns(host), "unshare", "--uts", "--mount",
                "--propagation", "private", "sh", "-c", _HOST_SHIM, self.hostname(host),
                self._boot_id_file(host), self._hosts_file(), *argv]

    def host_env(self, host: int, env: Mapping[str, str] | None = None) -> dict[str, str]:
        e = dict(os.environ if env is None else env)
        e.update(TESTBED_HOST=str(host), TESTBED_HOSTS=str(self.hosts), TESTBED_MASTER_ADDR=self.master_addr)
        return e

    def popen(self, host: int, argv: Sequence[str], env: Mapping[str, str] | None = None,
              **kwargs: object) -> subprocess.Popen:
        """Start argv on `host` in its own session (close() kills the whole group)."""
        p = subprocess.Popen(self.wrap(host, argv), env=self.host_env(host, env), start_new_session=True,
                             **kwargs)  # type: ignore[call-overload]
        self._procs.append(p)
        return p

    def run_all(self, argvs: Sequence[Sequence[str]], env: Mapping[str, str] | None = None,
                timeout: float | None = None) -> list[HostRun]:
        """Run argvs[k] on host k, all at once; wait for all (kill all at the timeout)."""
        assert len(argvs) == self.hosts
        assert self._tmp
        procs, files = [], []
        for k, argv in enumerate(argvs):
            out = open(os.path.join(self._tmp, f"h{k}.{len(self._procs)}.out"), "w+")
            err = open(os.path.join(self._tmp, f"h{k}.{len(self._procs)}.err"), "w+")
            files.append((out, err))
            procs.append(self.popen(k, argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL))
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        for p in procs:
            try:
                p.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                break
        if timed_out:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
            for p in procs:
                p.wait()
        runs = []
        for k, (p, (out, err)) in enumerate(zip(procs, files)):
            out.seek(0)
            err.seek(0)
            note = f"\n[testbed: host {k} killed after {timeout}s timeout]\n" if timed_out else ""
            runs.append(HostRun(k, p.returncode, out.read(), err.read() + note))
            out.close()
            err.close()
        return runs

    def torchrun_argv(self, host: int, script: str, args: Iterable[str] = (), *, nproc_per_host: int,
                      master_port: int = 29500, python: str = sys.executable) -> list[str]:
        return [python, "-m", "torch.distributed.run", f"--nnodes={self.hosts}", f"--node-rank={host}",
                f"--nproc-per-node={nproc_per_host}", f"--master-addr={self.master_addr}",
                f"--master-port={master_port}", script, *args]

    def torchrun(self, script: str, args: Iterable[str] = (), *, nproc_per_host: int,
                 env: Mapping[str, str] | None = None, timeout: float | None = None,
                 master_port: int = 29500, python: str = sys.executable) -> list[HostRun]:
        """torchrun on every host (--nnodes n --node-rank k); ranks k*g..k*g+g-1 live on host k."""
        args = list(args)
        argvs = [self.torchrun_argv(k, script, args, nproc_per_host=nproc_per_host,
                                    master_port=master_port, python=python) for k in range(self.hosts)]
        return self.run_all(argvs, env=env, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    # tests/python/distx_testing.py, by path (stdlib only, as this file).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "python"))
    from distx_testing import free_port

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["run", "torchrun", "up", "cleanup"])
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--rate", default="1gbit", help="link rate, tc syntax; 'none' for unthrottled")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--nproc-per-host", type=int, default=2)
    p.add_argument("--timeout", type=float, default=None)
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []  # ({host} becomes the host index)
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if a.mode == "cleanup":
        removed = cleanup_stale(a.prefix)
        print(f"removed {len(removed)} stale namespaces" + (": " + " ".join(removed) if removed else ""))
        return 0
    reason = unavailable_reason()
    if reason:
        print(f"testbed unavailable: {reason}", file=sys.stderr)
        return 2
    rate = None if a.rate == "none" else a.rate
    with Testbed(a.hosts, rate, prefix=a.prefix) as tb:
        hosts = ", ".join(f"{tb.ns(k)}={tb.addr(k)}" for k in range(a.hosts))
        print(f"testbed {tb.name}: {a.hosts} hosts ({hosts}), links {rate or 'unthrottled'}", file=sys.stderr)
        if a.mode == "up":
            print(f"enter a host with: ip netns exec {tb.ns(0)} bash   (Ctrl-C removes the testbed)",
                  file=sys.stderr)
            while True:
                time.sleep(3600)
        if not cmd:
            p.error("give a command after --")
        before = tb.tx_bytes()
        if a.mode == "run":
            runs = tb.run_all([[c.replace("{host}", str(k)) for c in cmd] for k in range(a.hosts)],
                              timeout=a.timeout)
        else:
            runs = tb.torchrun(cmd[0], cmd[1:], nproc_per_host=a.nproc_per_host, timeout=a.timeout,
                               master_port=free_port())
        sent = [x - y for x, y in zip(tb.tx_bytes(), before)]
        for r in runs:
            for line in r.output.splitlines():
                print(f"[h{r.host}] {line}")
        print(f"exit codes {[r.returncode for r in runs]}; bytes sent per host link {sent}", file=sys.stderr)
        return max((abs(r.returncode) for r in runs), default=0)


if __name__ == "__main__":
    sys.exit(main())
