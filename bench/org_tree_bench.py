"""Governance at scale: an org tree of 10,000+ nodes.

Starts a control plane (SQLite store) and, through the admin API, creates
one organisation, 100 teams and 100 projects under each (10,101 nodes), plus
an API key on a project; then times listing the tree, a scoped key listing,
and the proxy-side work the tree causes: compiling and loading a routing
table that carries every node.

    .venv/bin/python bench/org_tree_bench.py [--teams 100] [--projects 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import Services  # noqa: E402


async def run(args: argparse.Namespace, address: str) -> None:
    from dataplane.table import RuntimeTable
    from megarouter.admin_client import admin_channel
    from megarouter.v1 import admin_pb2, admin_pb2_grpc, routing_pb2

    async with admin_channel(address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.PutNode(routing_pb2.OrgNode(name="acme", kind="org"))
        write_ms: list[float] = []
        started = time.perf_counter()
        for team in range(args.teams):
            nodes = [routing_pb2.OrgNode(name=f"team-{team}", kind="team", parent="acme")]
            nodes += [routing_pb2.OrgNode(name=f"team-{team}-p{p}", kind="project", parent=f"team-{team}")
                      for p in range(args.projects)]
            for node in nodes:
                t0 = time.perf_counter()
                await admin.PutNode(node)
                write_ms.append((time.perf_counter() - t0) * 1000)
        total = time.perf_counter() - started
        count = len(write_ms) + 1
        await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(name="deep-key", node=f"team-{args.teams - 1}-p0"))
        t0 = time.perf_counter()
        listed = await admin.ListNodes(admin_pb2.ListRequest())
        list_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        table = await admin.GetRoutingTable(admin_pb2.GetRoutingTableRequest())
        table_ms = (time.perf_counter() - t0) * 1000
    loads = []
    for _ in range(5):
        t0 = time.perf_counter()
        RuntimeTable.load(table, secrets=lambda ref: None)
        loads.append((time.perf_counter() - t0) * 1000)

    ordered = sorted(write_ms)
    print("| measure | value |\n|---|---:|")
    print(f"| nodes created | {count:,} (1 org, {args.teams} teams x {args.projects} projects) |")
    p99 = ordered[int(0.99 * len(ordered))]
    print(f"| admin PutNode, p50 / p99 | {statistics.median(write_ms):.2f} / {p99:.2f} ms |")
    print(f"| whole tree applied | {total:.1f} s ({count / total:,.0f} writes/s) |")
    print(f"| ListNodes ({len(listed.items):,} nodes) | {list_ms:.0f} ms |")
    print(f"| GetRoutingTable ({len(table.nodes):,} nodes, {table.ByteSize() / 1024:.0f} KiB) | {table_ms:.0f} ms |")
    print(f"| proxy RuntimeTable.load of that table, median of 5 | {statistics.median(loads):.0f} ms |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--projects", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("MEGAROUTER_ADMIN_TOKEN", "mr-admin-bench-" + os.urandom(12).hex())
    os.environ.setdefault("MEGAROUTER_PROXY_TOKEN", "mr-proxy-bench-" + os.urandom(12).hex())
    tmp = Path(tempfile.mkdtemp(prefix="megarouter-org-"))
    services = Services(tmp)
    try:
        cp = services.start("controlplane", [
            sys.executable, "-m", "megarouter", "controlplane", "--listen", "127.0.0.1:0",
            "--store", str(tmp / "store"), "--metrics-listen", "127.0.0.1:0"], None)
        asyncio.run(run(args, f"127.0.0.1:{cp.port}"))
    finally:
        services.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
