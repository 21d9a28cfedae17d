"""Guard the public surface: a short, sorted, complete `__all__`."""

from __future__ import annotations

import importlib

import pytest

import agent


@pytest.mark.parametrize(
    "module",
    ["agent", "agent.errors", "agent.events", "agent.messages", "agent.testing", "agent.tool"],
)
def test_all_is_sorted_and_resolves(module):
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert names == sorted(names)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name}"


def test_every_public_error_and_event_is_exported():
    from agent import errors, events

    for mod in (errors, events):
        for name in mod.__all__:
            assert name in agent.__all__, name


def test_tests_cannot_reach_beyond_loopback() -> None:
    import socket

    import pytest

    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="only connect"):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: refused before any packet is sent
