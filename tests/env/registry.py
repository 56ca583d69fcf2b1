"""Which peers exist, and in which order a set of them has to start.

Peers are looked up by name (``--only kafka,kube``, fixture names). ``kube`` and ``helm``
are written separately and may not be in the tree yet: they are imported lazily and
reported as unavailable rather than breaking every other peer.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from tests.env.base import Peer, PeerError

# name -> "module:Class". Order is the default start order for "all".
PEER_SPECS: dict[str, str] = {
    "kafka": "tests.env.kafka:KafkaPeer",
    "postgres": "tests.env.postgres:PostgresPeer",
    "alertmanager": "tests.env.alertmanager:AlertmanagerPeer",
    "prometheus": "tests.env.prometheus:PrometheusPeer",
    "smtp": "tests.env.smtp:SmtpPeer",
    "slack": "tests.env.slack:SlackPeer",
    "kube": "tests.env.kube:KubePeer",
    "helm": "tests.env.helm:HelmPeer",
}

# Peers maintained elsewhere, which may not have landed yet.
OPTIONAL = frozenset({"kube", "helm"})


def load(name: str) -> type[Peer]:
    """Import one peer class; PeerError if unknown or (for optional peers) missing."""
    try:
        spec = PEER_SPECS[name]
    except KeyError:
        raise PeerError(f"unknown peer {name!r}; known: {', '.join(PEER_SPECS)}") from None
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise PeerError(
                f"peer {name!r} is not available: {module_name} does not exist"
            ) from exc
        raise
    cls: type[Peer] = getattr(module, class_name)
    return cls


# Why a peer is not in PEERS, reported when someone asks for it.
UNAVAILABLE: dict[str, str] = {}


def _load_available() -> dict[str, type[Peer]]:
    peers: dict[str, type[Peer]] = {}
    for name in PEER_SPECS:
        try:
            peers[name] = load(name)
        except PeerError as exc:
            UNAVAILABLE[name] = str(exc)  # not in the tree (yet)
        except Exception as exc:
            if name not in OPTIONAL:
                raise
            # A peer being written elsewhere must not break every other peer.
            UNAVAILABLE[name] = f"peer {name!r} failed to import: {exc!r}"
    return peers


PEERS: dict[str, type[Peer]] = _load_available()


def available() -> list[str]:
    return list(PEERS)


def resolve(names: Iterable[str]) -> list[str]:
    """The named peers plus everything they require, dependencies first."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in visiting:
            raise PeerError(f"dependency cycle: {' -> '.join((*chain, name))}")
        if name not in PEERS:
            if name in UNAVAILABLE:
                raise PeerError(UNAVAILABLE[name])
            PEERS[name] = load(name)  # raises a clear PeerError if it does not exist
        visiting.add(name)
        for dep in PEERS[name].requires:
            visit(dep, (*chain, name))
        visiting.discard(name)
        order.append(name)

    for name in names:
        visit(name, ())
    return order
