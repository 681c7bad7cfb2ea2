"""Which version answers a request: the model's deployment, applied per request.

A ``Route`` is a model's deployment as a replica last read it (stable version,
candidate, candidate weight, mode). Requests that name no version are routed by
their **routing key** (DESIGN.md "Identity of a decision"): the request parameter
``osprey_routing_key`` when given, else a non-empty client request id, else the
decision id. The key is hashed (BLAKE2b, 64 bits) into one of 10,000 buckets, so
a key always lands on the same side of a given weight (sticky), and the share of
keys below ``weight`` % is the weight:

* ``canary``: buckets below the weight go to the candidate, the rest to stable;
* ``shadow``: everyone gets the stable answer; buckets below the weight also send
  a mirrored copy to the candidate, off the response path;
* ``blue_green``: everyone gets stable (the candidate loads and warms, no traffic).

A request that names a version gets that version, or NOT_FOUND if it is not loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ROUTING_KEY_PARAMETER = "osprey_routing_key"
BUCKETS = 10_000


@dataclass(frozen=True)
class Route:
    """A model's deployment as this replica follows it."""

    stable: int | None
    candidate: int | None = None
    weight: int = 0  # 0..100
    mode: str | None = None  # blue_green | canary | shadow
    revision: int = 0


@dataclass(frozen=True)
class Choice:
    """The version that answers, and the one that gets a shadow copy (if any)."""

    version: int | None
    shadow: int | None
    route: str  # stable | canary | shadow (the route of the answering version)


def bucket(key: str) -> int:
    """The key's bucket in [0, BUCKETS): stable across processes and hosts."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % BUCKETS


def routing_key(parameter: object, client_id: str, decision_id: str) -> str:
    """The key a request is routed by (see the module docstring)."""
    if isinstance(parameter, str) and parameter:
        return parameter
    if isinstance(parameter, int | float) and not isinstance(parameter, bool):
        return str(parameter)
    return client_id or decision_id


def choose(route: Route, key: str) -> Choice:
    """Where a request with routing key ``key`` goes under ``route``."""
    if route.candidate is None or route.mode is None or route.weight <= 0:
        return Choice(route.stable, None, "stable")
    inside = bucket(key) < route.weight * (BUCKETS // 100)
    if route.mode == "canary":
        return Choice(route.candidate, None, "canary") if inside else Choice(
            route.stable, None, "stable")
    if route.mode == "shadow":
        return Choice(route.stable, route.candidate if inside else None, "stable")
    return Choice(route.stable, None, "stable")
