"""One swim-protocol 0.6.3 node for the real-process benchmark.

``python -m bench.peers.swim_node --name N --bind H:P --http H:P --seeds-file F --size N``

swim-protocol names a member by its ``host:port``, so ``--name`` is informational and the
member names in the snapshot are addresses (the benchmark maps them back). Its knobs set to
memberlist's LAN timings as far as they map: ping every 1 s, ping timeout 500 ms, 3
ping-reqs with 500 ms for their acks (so a probe ends within its 1 s period, as in
memberlist), dissemination every 200 ms (memberlist's gossip interval) and a fixed suspect
timeout equal to memberlist's *minimum* suspicion timeout at this cluster size,
``4 * max(1, log10(size)) * probe interval``; swim-protocol has no Lifeguard, so it never
stretches. OFFLINE is reported as DEAD. Packets are HMAC-signed (not optional in the
library; a fixed secret here).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
from contextlib import AsyncExitStack
from typing import Any

from swimprotocol.members import Member, Members
from swimprotocol.status import Status
from swimprotocol.udp import UdpConfig, UdpTransport
from swimprotocol.worker import Worker

from bench.peers._http import read_seeds, serve_snapshot, wall_ms

_STATUS = {Status.ONLINE: "ALIVE", Status.SUSPECT: "SUSPECT", Status.OFFLINE: "DEAD"}


async def run(args: argparse.Namespace) -> None:
    peers = [s for s in read_seeds(args.seeds_file) if s != args.bind]
    suspect_timeout_s = 4.0 * max(1.0, math.log10(max(args.size, 1))) * 1.0
    config = UdpConfig(
        local_name=args.bind,
        peers=peers,
        secret="relaymesh-bench",
        local_metadata={"name": args.name.encode()},
        ping_interval=1.0,
        ping_timeout=0.5,
        ping_req_count=3,
        ping_req_timeout=0.5,
        suspect_timeout=suspect_timeout_s,
        sync_interval=0.2,
    )
    members = Members(config)
    worker = Worker(config, members)
    transport = UdpTransport(config, worker)
    changed: dict[str, tuple[str, int]] = {}

    async def on_change(member: Member) -> None:
        changed[member.name] = (_STATUS.get(member.status, member.status.name), wall_ms())

    def snapshot() -> dict[str, Any]:
        rows = []
        for member in sorted(members, key=lambda m: m.name):
            # A peer from the seeds list that was never heard from is OFFLINE from the start;
            # it has not "joined" this node's view yet.
            if member.name not in changed and not member.local:
                continue
            status = _STATUS.get(member.status, member.status.name)
            seen = changed.get(member.name)
            rows.append(
                {
                    "name": member.name,
                    "status": status,
                    "changed_wall_ms": seen[1] if seen and seen[0] == status else None,
                }
            )
        return {"local": args.bind, "impl": "swim-protocol", "members": rows}

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(transport)
        await stack.enter_async_context(worker)
        await stack.enter_async_context(members.listener.on_notify(on_change))
        server = await serve_snapshot(args.http, snapshot)
        try:
            await stop.wait()
        finally:
            server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--seeds-file", required=True)
    parser.add_argument("--size", type=int, default=5, help="cluster size, for the suspect timeout")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
