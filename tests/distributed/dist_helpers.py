"""Helpers for tests that start real processes: loopback rendezvous on a free port, one CPU thread each."""

import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = str(Path(__file__).with_name("_worker.py"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dist_env(port: int | None = None) -> dict[str, str]:
    """Loopback only: MASTER_ADDR=127.0.0.1 and gloo bound to the ``lo`` interface."""
    env = {
        **os.environ,
        "AUGKD_KERNEL_BACKEND": "torch",
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    if port is not None:
        env["MASTER_PORT"] = str(port)
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK"):
        env.pop(var, None)
    return env


def run(cmd: list[str], env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def torchrun(nproc: int, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node nproc`` on 127.0.0.1 and a free port, running the test worker."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        WORKER,
        *args,
    ]
    return run(cmd, dist_env(port), timeout)
