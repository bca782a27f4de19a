"""Status fields as enums, each with one pure transition function: a move its table does not allow is an
`InvalidTransition`, never a silently written string.

    ORDER = Lifecycle({OrderStatus.PENDING: {OrderStatus.PAID, OrderStatus.FAILED}, ...})
    order.status = ORDER(order.status, OrderStatus.PAID)

A status column keeps its text (a StrEnum is its value), so queries compare it with the enum's members.
"""

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Generic, TypeVar

S = TypeVar("S", bound=StrEnum)


class InvalidTransition(ValueError):
    """A status asked to move where its lifecycle does not go."""


class Lifecycle(Generic[S]):
    """Where each status of one kind may go next (a status with no entry is final)."""

    def __init__(self, moves: Mapping[S, Iterable[S]]):
        self.moves = {status: frozenset(targets) for status, targets in moves.items()}

    def __call__(self, current: str, target: S) -> S:
        """`target`, if `current` may move to it; else InvalidTransition naming both."""
        kind = type(target)
        try:
            now = kind(current)
        except ValueError:
            raise InvalidTransition(f"{current!r} is not a {kind.__name__}") from None
        if target not in self.moves.get(now, ()):
            raise InvalidTransition(f"a {kind.__name__} cannot go from {now} to {target}")
        return target

    def sources(self, target: S) -> list[S]:
        """The statuses that may move to `target` (for a conditional UPDATE ... WHERE status IN ...)."""
        return sorted(status for status, targets in self.moves.items() if target in targets)

    def final(self, status: str) -> bool:
        # a status column's text finds its StrEnum member (equal strings hash alike); stubs want the enum
        return not self.moves.get(status)  # type: ignore[call-overload]
