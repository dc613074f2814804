"""What every search loop is: a name, its own options (checked on construction), and a search
that only talks to a :class:`~pyprune.search.problem.PruningProblem`."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .problem import PruningProblem

__all__ = ["Loop", "check_step"]


class Loop:
    """A search strategy. Subclasses set :attr:`name` and implement :meth:`search`."""

    name: ClassVar[str] = "loop"

    @property
    def label(self) -> str:
        """How reports name this loop (e.g. ``oneshot-global``)."""
        return self.name

    def prepare(self, problem: PruningProblem) -> None:
        """Settle what the loop needs before it starts (by default: the target)."""
        problem.ensure_target()

    def search(self, problem: PruningProblem) -> None:
        """Move ``problem`` toward its target; Ctrl-C may stop it at any point (the problem then
        holds the last committed state, which meets the constraint)."""
        raise NotImplementedError


def check_step(step: object) -> float | int:
    """A step as a fraction in (0, 1] of a slot or a positive unit count."""
    if isinstance(step, bool) or not (isinstance(step, int) and step >= 1 or
                                      isinstance(step, float) and 0.0 < step <= 1.0):
        raise ValueError(f"step must be a fraction in (0, 1] or a positive unit count, got {step!r}")
    return step
