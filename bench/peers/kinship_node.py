"""One kinship 0.4.0 node for the real-process benchmark.

``python -m bench.peers.kinship_node --name N --bind H:P --http H:P --seeds-file F``

Timings are kinship's ``Config.lan()`` preset, which is memberlist's LAN profile (probe 1 s,
timeout 500 ms, 3 indirect checks, suspicion mult 4 / max mult 6, gossip 200 ms to 3,
retransmit mult 4, push/pull 30 s). Plaintext, like RelayMesh without a keyring: loopback
only, and it keeps the byte counts comparable (kinship's sealing adds ~40 B a packet).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import kinship

from bench.peers._http import read_seeds, serve_snapshot, wall_ms


async def run(args: argparse.Namespace) -> None:
    seeds = [s for s in read_seeds(args.seeds_file) if s != args.bind]
    cfg = kinship.Config.lan(
        name=args.name,
        bind=args.bind,
        seeds=seeds,
        insecure_plaintext=True,
        tcp_fallback_ping=True,
    )
    changed: dict[str, tuple[str, int]] = {}
    cluster = kinship.Cluster(cfg)
    await cluster.start()
    events = cluster.events()

    def snapshot() -> dict[str, Any]:
        names = set(changed) | {m.name for m in cluster.members()}
        members = []
        for name in sorted(names):
            member = cluster.member(name)
            if member is None:
                continue
            status = member.state.name
            seen = changed.get(name)
            members.append(
                {
                    "name": name,
                    "status": status,
                    "changed_wall_ms": seen[1] if seen and seen[0] == status else None,
                }
            )
        return {"local": args.name, "impl": "kinship", "members": members}

    async def watch() -> None:
        async for event in events:
            member = getattr(event, "member", None)
            if member is not None:
                changed[member.name] = (member.state.name, wall_ms())

    server = await serve_snapshot(args.http, snapshot)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(watch())
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        server.close()
        await cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--seeds-file", required=True)
    parser.add_argument("--size", type=int, default=0, help="ignored: kinship scales itself")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
