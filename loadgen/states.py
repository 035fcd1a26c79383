"""Explicit lifecycles: a state enum, the events that move it, and a table a reader can list.

The runner (:mod:`loadgen.runner`), the Locust user (:mod:`loadgen.locust.user`) and the
capacity shape (:mod:`loadgen.locust.shape`) each live through a few phases. Booleans and
strings hid which phase followed which; like h11's ``_SWITCH_*`` tables and websockets'
``State``, each now names its states and events in enums and says in one table which event
moves which state where. Anything not in the table is a bug, raised at once as
:class:`TransitionError` instead of leaving the object in a state nobody planned for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Generic, TypeVar

__all__ = ["Machine", "TransitionError", "transitions"]

S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)

log = logging.getLogger(__name__)


class TransitionError(RuntimeError):
    """An event the table does not allow in the current state (a bug, not bad input)."""


def transitions(table: Mapping[S, Mapping[E, S]]) -> Iterator[tuple[S, E, S]]:
    """Every ``(state, event, next state)`` of a table, in the table's order."""
    for state, moves in table.items():
        for event, after in moves.items():
            yield state, event, after


class Machine(Generic[S, E]):
    """One object's state, moved only by the events its table allows.

    ``name`` says whose state it is in errors and debug lines (a charger id, "capacity").
    ``trace``, when a list, collects ``(state, event, next state)``: tests follow a real
    object through its life with it; ``None`` (the default) costs nothing.
    """

    __slots__ = ("name", "state", "table", "trace")

    def __init__(self, name: str, table: Mapping[S, Mapping[E, S]], initial: S) -> None:
        self.name = name
        self.table = table
        self.state = initial
        self.trace: list[tuple[S, E, S]] | None = None

    def can(self, event: E) -> bool:
        return event in self.table.get(self.state, {})

    def fire(self, event: E) -> S:
        """Move by ``event``; the new state. :class:`TransitionError` if not allowed."""
        before = self.state
        after = self.table.get(before, {}).get(event)
        if after is None:
            raise TransitionError(
                f"{self.name}: {event.name.lower()} is not allowed when {before.name.lower()}"
            )
        self.state = after
        if self.trace is not None:
            self.trace.append((before, event, after))
        if after is not before:
            log.debug("%s: %s -> %s (%s)", self.name, before.name, after.name, event.name)
        return after
