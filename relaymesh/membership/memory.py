"""An in-memory network of protocol cores on a virtual clock, for tests and the simulator.

Owns the fake beside ``transport.py``: it moves the datagrams ``Swim`` cores emit,
with loss, delay, partitions, slow nodes, kills and stalls, and does anti-entropy
push/pull in-process. Time is a shared ``FakeClock`` advanced event by event (a
heap of deliveries, timer wake-ups and push/pulls), so 300 simulated seconds take
as long as the work in them, not 300 seconds. Deterministic for a given ``rng``.

Every core added must use this network's clock. Killed nodes neither send nor
receive; frozen nodes (a stalled event loop) keep arriving packets and handle
them, before their due timers, when they thaw.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from typing import cast

from relaymesh.clock import FakeClock
from relaymesh.exceptions import ProtocolError
from relaymesh.membership.antientropy import pushpull_interval_ms
from relaymesh.membership.protocol import MemberChanged, Swim
from relaymesh.membership.state import Address

__all__ = ["EventSink", "MemoryNetwork"]

EventSink = Callable[[str, MemberChanged], None]
"""Receives (observer name, event) for every event any core emits."""
_Datagram = tuple[Address, bytes]

# Same-millisecond order: packets first (as an event loop handles ready I/O before
# due timers), then timers, then push/pull.
_DELIVER = 0
_TICK = 1
_PUSHPULL = 2


class _Node:
    __slots__ = (
        "address",
        "extra_delay_ms",
        "frozen_until_ms",
        "generation",
        "swim",
        "up",
        "wake_ms",
    )

    def __init__(self, swim: Swim) -> None:
        self.swim = swim
        self.address = swim.address
        self.up = True
        self.frozen_until_ms = 0
        self.extra_delay_ms = (0, 0)
        self.wake_ms = -1
        self.generation = 0
        """Bumped by revive(), so a push/pull chain from before a kill does not double up."""


class MemoryNetwork:
    """Datagrams between ``Swim`` cores, with the failures a real network has."""

    def __init__(
        self,
        clock: FakeClock,
        rng: random.Random,
        loss: float = 0.0,
        delay_ms: tuple[int, int] = (0, 0),
        *,
        pushpull: bool = True,
        event_sink: EventSink | None = None,
    ) -> None:
        """``loss`` is the chance each datagram is lost; ``delay_ms`` its (min, max) latency.

        Events are handed to ``event_sink`` as they happen, or dropped without one.
        """
        self._clock = clock
        self._rng = rng
        self.loss = loss
        self.delay_ms = delay_ms
        self._pushpull = pushpull
        self.event_sink = event_sink
        self._nodes: dict[Address, _Node] = {}
        self._groups: dict[Address, int] | None = None
        self._heap: list[tuple[int, int, int, _Node, object]] = []
        self._seq = 0
        self.packets_sent = 0
        self.packets_delivered = 0
        self.packets_lost = 0
        self.bytes_sent = 0
        """Datagrams only; push/pull (a stream in a real driver) is counted apart."""
        self.pushpull_exchanges = 0
        self.pushpull_bytes = 0

    # --- membership of the network --------------------------------------------

    def add(self, swim: Swim) -> None:
        """Plug a core in (replacing any at its address: a restart)."""
        old = self._nodes.get(swim.address)
        if old is not None:
            old.up = False
        node = _Node(swim)
        self._nodes[swim.address] = node
        self._after(node)
        if self._pushpull:
            # Like the driver: the interval scales with the view the node starts with
            # (one member when it will join; all of them when preloaded).
            interval_ms = pushpull_interval_ms(swim.config.push_pull_interval_ms, swim.num_alive())
            first_ms = self._rng.randrange(max(1, interval_ms))
            self._push(self.now_ms + first_ms, _PUSHPULL, node, node.generation)

    def join(self, address: Address, seeds: Iterable[Address]) -> None:
        """``swim.join(seeds)``, then a push/pull with the first reachable seed (as a driver)."""
        node = self._nodes[address]
        seed_list = list(seeds)
        node.swim.join(seed_list)
        self._after(node)
        for seed in seed_list:
            other = self._nodes.get(seed)
            if other is not None and other is not node and self._reachable(node, other):
                self._exchange(node, other, join=True)
                break

    def swim(self, address: Address) -> Swim:
        return self._nodes[address].swim

    def swims(self) -> list[Swim]:
        """The cores that are up (not killed)."""
        return [n.swim for n in self._nodes.values() if n.up]

    @property
    def now_ms(self) -> int:
        return self._clock.monotonic_ms()

    # --- failures ---------------------------------------------------------------

    def kill(self, address: Address) -> None:
        """The node stops: no timers, no packets in or out."""
        self._nodes[address].up = False

    def revive(self, address: Address) -> None:
        """A killed node's same core resumes (a reconnected cable, not a restart)."""
        node = self._nodes[address]
        if node.up:
            return
        node.up = True
        node.wake_ms = -1
        node.generation += 1
        self._after(node)
        if self._pushpull:
            self._push(self.now_ms, _PUSHPULL, node, node.generation)

    def freeze(self, address: Address, duration_ms: int) -> None:
        """Stall the node's event loop: packets queue up and timers wait until it thaws."""
        node = self._nodes[address]
        node.frozen_until_ms = max(node.frozen_until_ms, self.now_ms + duration_ms)

    def slow(self, address: Address, delay_ms: tuple[int, int]) -> None:
        """Packets to this node are handled (min, max) ms late on top of the network delay."""
        self._nodes[address].extra_delay_ms = delay_ms

    def partition(self, groups: Iterable[Iterable[Address]]) -> None:
        """Only nodes in the same group reach each other; unlisted nodes form one group."""
        self._groups = {}
        for i, group in enumerate(groups):
            for address in group:
                self._groups[address] = i

    def heal(self) -> None:
        self._groups = None

    def reachable(self, a: Address, b: Address) -> bool:
        na, nb = self._nodes.get(a), self._nodes.get(b)
        return na is not None and nb is not None and self._reachable(na, nb)

    # --- hostile peers ----------------------------------------------------------

    def inject(self, dst: Address, data: bytes, src: Address) -> None:
        """Deliver a datagram from any source (a forger, a spoofed address) now."""
        node = self._nodes.get(dst)
        if node is not None and node.up:
            self._push(self.now_ms, _DELIVER, node, (src, data))

    def inject_state(self, dst: Address, data: bytes) -> None:
        """Hand a push/pull request from anyone to a node, as its TCP server would."""
        node = self._nodes.get(dst)
        if node is None or not node.up:
            return
        try:
            node.swim.merge_state(data)
        except ProtocolError:
            pass  # counted by the core that refused it
        self._after(node)

    # --- running ----------------------------------------------------------------

    def run_for(self, duration_ms: int) -> None:
        self.run_until(self.now_ms + duration_ms)

    def run_until(self, until_ms: int) -> None:
        """Process every event up to ``until_ms``, then leave the clock there."""
        # The loop every simulated packet and timer goes through: locals, not attributes.
        heap = self._heap
        clock = self._clock
        heappop = heapq.heappop
        now_ms = clock.monotonic_ms()  # only this loop moves the clock
        while heap and heap[0][0] <= until_ms:
            at_ms, kind, _, node, payload = heappop(heap)
            if at_ms > now_ms:
                clock.set(at_ms)
                now_ms = at_ms
            if not node.up:
                continue
            if kind == _DELIVER:
                if at_ms < node.frozen_until_ms:
                    self._push(node.frozen_until_ms, _DELIVER, node, payload)
                    continue
                src, data = cast(_Datagram, payload)
                self.packets_delivered += 1
                node.swim.handle_packet(data, src)
                self._after(node)
            elif kind == _TICK:
                if at_ms != node.wake_ms:
                    continue  # superseded
                if at_ms < node.frozen_until_ms:
                    node.wake_ms = node.frozen_until_ms
                    self._push(node.frozen_until_ms, _TICK, node, None)
                    continue
                node.wake_ms = -1
                node.swim.tick()
                self._after(node)
            elif payload == node.generation:
                self._on_pushpull(node, at_ms)
        if until_ms > clock.monotonic_ms():
            clock.set(until_ms)

    # --- internals --------------------------------------------------------------

    def _push(self, at_ms: int, kind: int, node: _Node, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, kind, self._seq, node, payload))

    def _after(self, node: _Node) -> None:
        """Send what the core produced, hand on its events, and book its next wake-up."""
        swim = node.swim
        outbound = swim.take_outbound()
        if outbound:
            for dst, data in outbound:
                self._transmit(node, dst, data)
        events = swim.take_events()
        if events and self.event_sink is not None:
            for event in events:
                self.event_sink(swim.name, event)
        deadline_ms = max(swim.next_deadline_ms(), self._clock.monotonic_ms())
        if deadline_ms != node.wake_ms:
            node.wake_ms = deadline_ms
            self._push(deadline_ms, _TICK, node, None)

    def _transmit(self, src: _Node, dst_address: Address, data: bytes) -> None:
        self.packets_sent += 1
        self.bytes_sent += len(data)
        dst = self._nodes.get(dst_address)
        if (
            dst is None
            or not dst.up
            or (self.loss > 0 and self._rng.random() < self.loss)
            or (self._groups is not None and not self._reachable(src, dst))
        ):
            self.packets_lost += 1
            return
        # randrange(lo, hi + 1) is exactly what randint(lo, hi) calls: same draws, one
        # call less per packet.
        lo, hi = self.delay_ms
        delay = lo if hi <= lo else self._rng.randrange(lo, hi + 1)
        extra_lo, extra_hi = dst.extra_delay_ms
        if extra_hi > 0:
            delay += self._rng.randrange(extra_lo, extra_hi + 1)
        self._push(self._clock.monotonic_ms() + delay, _DELIVER, dst, (src.address, data))

    def _reachable(self, a: _Node, b: _Node) -> bool:
        if not (a.up and b.up):
            return False
        groups = self._groups
        return groups is None or groups.get(a.address, -1) == groups.get(b.address, -1)

    def _on_pushpull(self, node: _Node, at_ms: int) -> None:
        swim = node.swim
        if at_ms < node.frozen_until_ms:
            self._push(node.frozen_until_ms, _PUSHPULL, node, node.generation)
            return
        target = swim.pushpull_target()
        other = self._nodes.get(target) if target is not None else None
        if (
            other is not None
            and other is not node
            and self._reachable(node, other)
            and self.now_ms >= other.frozen_until_ms
        ):
            self._exchange(node, other, join=False)
        interval_ms = pushpull_interval_ms(swim.config.push_pull_interval_ms, swim.num_alive())
        self._push(self.now_ms + interval_ms, _PUSHPULL, node, node.generation)

    def _exchange(self, a: _Node, b: _Node, *, join: bool) -> None:
        self.pushpull_exchanges += 1
        try:
            request = a.swim.encode_state(join)
            self.pushpull_bytes += len(request)
            b.swim.merge_state(request)
            reply = b.swim.encode_state()
            self.pushpull_bytes += len(reply)
            a.swim.merge_state(reply)
        except ProtocolError:
            pass  # counted by the core that refused it
        self._after(a)
        self._after(b)
