"""What a search aims for (a target) and what it must not lose on the way (a constraint).

Targets: :class:`Sparsity` (fraction of prunable weight elements zeroed, for weight granularity),
:class:`Params` and :class:`MACs` (fraction of the original model kept), :class:`Latency`
(milliseconds per inference measured with ONNX Runtime on this machine). A constraint says how
far the metric may fall from the unpruned model: :class:`Constraint` (absolute or relative drop),
or none at all (prune to the target regardless and report the metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import TargetError

if TYPE_CHECKING:
    from .metrics import Metric

__all__ = ["Target", "Sparsity", "Params", "MACs", "Latency", "Constraint", "as_constraint", "make_target",
           "TARGET_KINDS"]


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TargetError(f"{what} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise TargetError(f"{what} must be finite, got {value!r}")
    return v


@dataclass(frozen=True)
class Target:
    """Base class of targets. ``value`` is the goal; :meth:`reached` compares a cost with it."""

    value: float

    kind = "target"  # overridden: "sparsity", "params", "macs", "latency"

    def __post_init__(self) -> None:
        _number(self.value, f"{type(self).__name__} target")

    def reached(self, achieved: float) -> bool:
        """True when the achieved figure (see :attr:`kind`) meets the target."""
        return achieved >= self.value if self.kind == "sparsity" else achieved <= self.value

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class _Ratio(Target):
    def __post_init__(self) -> None:
        v = _number(self.value, f"{type(self).__name__} target")
        if not 0.0 < v <= 1.0:
            raise TargetError(
                f"{type(self).__name__} target is the fraction of the original to keep and must be "
                f"in (0, 1], got {self.value!r}"
            )


@dataclass(frozen=True)
class Params(_Ratio):
    """Keep at most this fraction of the original parameter count (e.g. ``Params(0.5)``)."""

    kind = "params"

    def describe(self) -> str:
        return f"params <= {self.value:.3g} x original"


@dataclass(frozen=True)
class MACs(_Ratio):
    """Keep at most this fraction of the original multiply-accumulates per sample."""

    kind = "macs"

    def describe(self) -> str:
        return f"MACs <= {self.value:.3g} x original"


@dataclass(frozen=True)
class Sparsity(Target):
    """Zero at least this fraction of the prunable weight elements (weight granularity)."""

    kind = "sparsity"

    def __post_init__(self) -> None:
        v = _number(self.value, "Sparsity target")
        if not 0.0 <= v < 1.0:
            raise TargetError(f"Sparsity target is the fraction of weights zeroed, in [0, 1), got {self.value!r}")

    def describe(self) -> str:
        return f"sparsity >= {self.value:.3g}"


@dataclass(frozen=True)
class Latency(Target):
    """At most ``value`` milliseconds per inference (median, ``batch_size`` samples, ``threads``).

    Masks do not make a model faster, so searches step by MACs and, at checkpoints, remove the
    chosen units physically and measure the real latency of the smaller model.
    """

    batch_size: int = 1
    threads: int | None = None
    runs: int = 30

    kind = "latency"

    def __post_init__(self) -> None:
        v = _number(self.value, "Latency target")
        if v <= 0:
            raise TargetError(f"Latency target must be a positive number of milliseconds, got {self.value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise TargetError(f"Latency batch_size must be a positive integer, got {self.batch_size!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise TargetError(f"Latency threads must be a positive integer or None, got {self.threads!r}")
        if isinstance(self.runs, bool) or not isinstance(self.runs, int) or self.runs < 1:
            raise TargetError(f"Latency runs must be a positive integer, got {self.runs!r}")

    def describe(self) -> str:
        return f"latency <= {self.value:.3g} ms (batch {self.batch_size})"


@dataclass(frozen=True)
class Constraint:
    """The metric may fall at most ``max_drop`` from the unpruned model's value.

    ``relative=False``: an absolute drop (accuracy 0.01 = one point); ``relative=True``: a
    fraction of the baseline value. For lower-is-better metrics (KL, MSE) the drop is a rise.
    """

    max_drop: float
    relative: bool = False

    def __post_init__(self) -> None:
        v = _number(self.max_drop, "max_drop")
        if v < 0:
            raise TargetError(f"max_drop must be >= 0, got {self.max_drop!r}")
        if not isinstance(self.relative, bool):
            raise TargetError(f"relative must be True or False, got {self.relative!r}")

    def threshold(self, baseline: float, metric: Metric) -> float:
        """The worst metric value still accepted, given the unpruned model's ``baseline``."""
        drop = abs(baseline) * self.max_drop if self.relative else self.max_drop
        return baseline - drop if metric.direction == "higher" else baseline + drop

    def describe(self, metric: Metric | None = None) -> str:
        name = metric.name if metric is not None else "metric"
        how = f"{self.max_drop:.3g} x baseline" if self.relative else f"{self.max_drop:.3g}"
        verb = "drop" if metric is None or metric.direction == "higher" else "rise"
        return f"{name} may {verb} at most {how}"


def as_constraint(max_drop: float | Constraint | None, relative: bool = False) -> Constraint | None:
    """``None`` (no constraint), a number (absolute, or relative when asked) or a Constraint."""
    if max_drop is None or isinstance(max_drop, Constraint):
        return max_drop
    return Constraint(max_drop, relative)


#: Target kinds by the name the command line and recipes use for them.
TARGET_KINDS: dict[str, type[Target]] = {"sparsity": Sparsity, "params": Params, "macs": MACs, "latency": Latency}


def make_target(kind: str, value: object) -> Target:
    """The target ``kind`` (one of :data:`TARGET_KINDS`) at ``value``; errors name the kind."""
    if kind not in TARGET_KINDS:
        raise TargetError(f"unknown target {kind!r}; known: {', '.join(TARGET_KINDS)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TargetError(f"{kind!r} must be a number, got {value!r}")
    try:
        return TARGET_KINDS[kind](value)
    except TargetError as exc:  # name the option as the user wrote it
        raise TargetError(f"{kind!r}: {exc}") from None
