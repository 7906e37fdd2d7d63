"""Port blocks for distributed jobs: never shared, never a port another program listens on."""

from __future__ import annotations

import socket

import pytest

from corral.scheduler.ports import PortAllocator, port_is_free


def free_range(size: int) -> int:
    """The first port of ``size`` consecutive ports that are free now (searched high, away from the defaults)."""
    for low in range(41000, 49000, size):
        if all(port_is_free(p) for p in range(low, low + size)):
            return low
    raise RuntimeError("no free range")


def test_blocks_are_disjoint_until_released_and_go_round_the_range() -> None:
    low = free_range(6)
    ports = PortAllocator(low, low + 5)
    a, b = ports.allocate(2), ports.allocate(3)
    assert a == (low, low + 1) and b == (low + 2, low + 3, low + 4)
    assert ports.allocate(2) is None, "only one port left"
    ports.release(a)
    assert ports.allocate(1) == (low + 5,), "the search goes on from the last block, not back to a freed port"
    assert ports.allocate(2) == (low, low + 1)
    assert ports.allocate(0) == ()


def test_a_port_another_program_listens_on_is_skipped() -> None:
    low = free_range(3)
    with socket.socket() as other:
        other.bind(("127.0.0.1", low))
        other.listen()
        assert not port_is_free(low)
        assert PortAllocator(low, low + 2).allocate(2) == (low + 1, low + 2)


def test_reserved_ports_of_recovered_attempts_are_not_given() -> None:
    low = free_range(3)
    ports = PortAllocator(low, low + 2)
    ports.reserve([low, low + 1])
    assert ports.allocate(1) == (low + 2,)


def test_bad_range_is_refused() -> None:
    with pytest.raises(ValueError, match="port range"):
        PortAllocator(3000, 2000)
