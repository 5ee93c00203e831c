"""Which Ray a batch runs on: a private local instance on loopback unless told, never one joined by accident.

`ray.init()` with no address joins whatever RAY_ADDRESS or a running head names, and a local instance binds
the machine's routable address; both are wrong for a default. Omitted, --address starts a private instance
bound to 127.0.0.1 in its own temporary folder and shuts it down after the batch; `auto`, `HOST:PORT` and
`ray://HOST:PORT` join that cluster (and leave it running).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import StablekitError, UsageError
from .outputs import pid_alive

INSTALL = "pip install 'stablekit[ray]'"
# Ray resolves 127.0.0.1 to the machine's routable address unless this says clusters are off (ray 2.60:
# ray._private.services.get_node_ip_address); a private instance needs no other machine to reach it.
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def private_folder(kind: str) -> str:
    """A new temporary folder `stablekit-KIND-PID-*`; those of processes gone (a SIGKILL leaves them) are removed
    first, so killed runs do not pile up in the temporary folder."""
    import re

    root = Path(tempfile.gettempdir())
    pattern = re.compile(rf"^stablekit-{kind}-(\d+)-")
    for entry in root.glob(f"stablekit-{kind}-*"):
        match = pattern.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"stablekit-{kind}-{os.getpid()}-")


def import_ray():
    """The ray module, or a usage error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray, which is not installed", hint=f"{INSTALL} (Ray 2.60)") from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """The Ray a batch is connected to."""

    address: str  # what to show: "private (127.0.0.1)" or the address joined
    private: bool  # started for this batch; shut down after it
    single_machine: bool  # every node is this machine: the driver's settings (STABLEKIT_HOME ...) apply to workers
    cpus: float
    gpus: float


@contextmanager
def connect(address: str | None, *, num_cpus: int | None = None) -> Iterator[Cluster]:
    """Connected to the Ray `address` names (None: a private local instance with `num_cpus` logical CPUs) for
    the block; a private instance is shut down and its folder removed after it. A process that already called
    ray.init itself (library use) is used as it is, and left connected."""
    ray = import_ray()
    if ray.is_initialized():
        yield _describe(ray, "this process's Ray", private=False)
        return
    if address is None:
        with _private(ray, num_cpus) as cluster:
            yield cluster
        return
    try:
        ray.init(address=address, log_to_driver=False)
    except ImportError as err:  # ray:// needs Ray Client's extra packages
        raise StablekitError(f"--address {address}: Ray Client is not installed ({err})",
                             hint="pip install 'ray[client]==2.60.*', or give the cluster's HOST:PORT instead") \
            from None
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise StablekitError(f"--address {address}: cannot join that Ray cluster ({err})",
                             hint="start it with `ray start --head` (see the README: token authentication needs "
                                  "RAY_AUTH_MODE=token and the cluster's token here too), or omit --address for a "
                                  "private local instance") from None
    try:
        yield _describe(ray, address, private=False)
    finally:
        ray.shutdown()  # disconnects this driver; the cluster keeps running


@contextmanager
def _private(ray, num_cpus: int | None) -> Iterator[Cluster]:
    folder = private_folder("ray")
    saved = os.environ.get(_LOOPBACK_SWITCH)
    constants = ray._private.ray_constants
    enabled = constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_SWITCH] = "0"  # for the processes Ray starts now, and for this one:
    constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=num_cpus,
                 _temp_dir=folder, log_to_driver=False)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        constants.ENABLE_RAY_CLUSTER = enabled
        if saved is None:
            os.environ.pop(_LOOPBACK_SWITCH, None)
        else:
            os.environ[_LOOPBACK_SWITCH] = saved
    try:
        yield _describe(ray, "a private local instance on 127.0.0.1", private=True)
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def _describe(ray, address: str, *, private: bool) -> Cluster:
    resources = ray.cluster_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    here = ray.util.get_node_ip_address()
    single = private or (len(nodes) == 1 and nodes[0].get("NodeManagerAddress") == here)
    return Cluster(address, private, single, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)))
