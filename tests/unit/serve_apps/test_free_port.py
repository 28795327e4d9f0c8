"""Unit: the port `mlrt serve` picks (no --port) is one no process of a starting Ray takes first
(no Ray)."""

from __future__ import annotations

import socket
from pathlib import Path

from serve_apps.local import free_port


def test_free_ports_are_bindable_distinct_and_below_the_kernels_ephemeral_range():
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50  # never handed out twice in one process
    for port in ports:  # not where a connecting or port-0 socket of Ray's may land meanwhile
        assert 20000 <= port < ephemeral_low, port  # nor in Ray's worker ports, 10002-19999
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # and free when handed out


def test_a_port_in_use_is_not_handed_out(monkeypatch):
    import serve_apps.local as local

    draw = local.random.randrange

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        picks = iter([taken] * 3)  # the first three draws hit the port in use, then random
        monkeypatch.setattr(local.random, "randrange",
                            lambda low, high: next(picks, None) or draw(low, high))
        assert local.free_port() != taken
        assert next(picks, None) is None  # it did draw the taken port, and went on
