"""What the cluster scripts run on the head node: ``python -m autopeft.cluster_node CMD``.

- ``host-ip``: the address of this machine's default route.
- ``wait-nodes ADDRESS N TIMEOUT [PID...]``: wait (bounded) until N Ray nodes joined.
"""

from __future__ import annotations

import logging
import socket
import sys
import time


def host_ip() -> str:
    """The address of this machine's default route (a loopback one when it has none)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            # Connecting a UDP socket sends nothing; it only picks the route and its source
            # address, which is the one Ray itself would choose for this node.
            probe.connect(("8.8.8.8", 80))
            return probe.getsockname()[0]
    except OSError:
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"


def wait_for_nodes(address: str, expected: int, timeout: float, pids: list[int]) -> int:
    """Wait until ``expected`` Ray nodes are alive; 0 when they are, 1 on timeout.

    ``pids``: the local processes that start the nodes (srun or ssh); one that ended means
    its node will not join, so the wait ends at once instead of at the deadline.
    """
    import psutil
    import ray

    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as err:  # noqa: BLE001 - any failure to connect ends the job the same way
        print(f"autopeft: cannot connect to the Ray head at {address}: {err}", file=sys.stderr)
        return 1
    try:
        deadline = time.monotonic() + timeout
        while True:
            alive = sum(1 for node in ray.nodes() if node["Alive"])
            if alive >= expected:
                res = ray.cluster_resources()
                print(
                    f"autopeft: {alive} of {expected} Ray nodes joined "
                    f"({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs)",
                    flush=True,
                )
                return 0
            gone = [pid for pid in pids if not psutil.pid_exists(pid)]
            if gone or time.monotonic() >= deadline:
                why = (
                    f"the process that started a node ended (pid {gone[0]}; see its output above)"
                    if gone
                    else f"within {timeout:g} s (set AUTOPEFT_NODES_TIMEOUT to wait longer)"
                )
                print(
                    f"autopeft: only {alive} of {expected} Ray nodes joined at {address}: {why}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(2)
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m autopeft.cluster_node host-ip | wait-nodes ADDRESS N TIMEOUT [PID...]``."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["host-ip"]:
        print(host_ip())
        return 0
    if args[:1] == ["wait-nodes"] and len(args) >= 4:
        address, expected, timeout, *pids = args[1:]
        return wait_for_nodes(address, int(expected), float(timeout), [int(p) for p in pids])
    print(f"usage: {main.__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
