"""Every setting of a pruning run, checked once, with its default in one place.

:class:`PruneOptions` is what the Python API, the command line and recipes all build: the CLI
and recipes from their flags and keys, :func:`pyprune.prune` from its keyword arguments. Each field
is validated on construction, so a bad value is refused with a message naming it before any model
is loaded. :class:`Limits` holds the per-group limits (how much of a group may go, in which
multiples).

The names of granularities, strategies and importance scores live here too, as plain tuples, so
the command line can list them without importing the numerical parts of the package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from .errors import TargetError

if TYPE_CHECKING:
    from .graph import Group
    from .metrics import Metric
    from .targets import Constraint, Target

__all__ = [
    "PruneOptions",
    "Limits",
    "GRANULARITIES",
    "STRATEGIES",
    "STRATEGY_ALIASES",
    "IMPORTANCE_NAMES",
    "DEFAULT_MAX_DROP",
    "DEFAULT_MACS",
    "EXECUTORS",
    "parse_duration",
    "format_duration",
    "RECOVERY_CHOICES",
    "DEFAULT_HOLDOUT",
    "HOLDOUT_MIN_SAMPLES",
]

#: What a search removes: channel/neuron groups, whole layers, single weights, N:M weight patterns.
GRANULARITIES = ("channel", "layer", "weight", "nm")
#: Where candidates are judged: the search's own session, a local process pool, a Ray cluster.
EXECUTORS = ("local", "process", "ray")
#: The search loops (:mod:`pyprune.search`).
STRATEGIES = ("oneshot", "recursive", "greedy", "random")
#: Other names of a strategy and the options they imply.
STRATEGY_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "oneshot_local": ("oneshot", {"scope": "local"}),
    "oneshot_global": ("oneshot", {"scope": "global"}),
}
#: Importance scores (:mod:`pyprune.importance`; a test keeps the two lists equal).
IMPORTANCE_NAMES = ("l1", "l2", "linf", "fpgm", "random", "wanda", "mean_activation", "apoz", "reconstruction", "obs",
                    "output_norm", "attention_entropy", "ablation")
#: How far the metric may fall unless told otherwise (one point of accuracy).
DEFAULT_MAX_DROP = 0.01
#: The target when none is given: half the MACs.
DEFAULT_MACS = 0.5
#: Recovery modes (:mod:`pyprune.recovery`); "auto" is the best the data allows: least-squares
#: reconstruction where the calibration data has enough rows for a layer, statistics elsewhere.
RECOVERY_CHOICES = ("auto", "none", "stats", "lstsq")
#: Fraction of the data held out to check the constraint on (data no recovery was fitted on and
#: no candidate was ranked on), when the data has at least HOLDOUT_MIN_SAMPLES samples.
DEFAULT_HOLDOUT = 0.3
HOLDOUT_MIN_SAMPLES = 150

#: With ``round_to="auto"``, convolution groups of at least this many channels keep a multiple of
#: ``_AUTO_ROUND``: ONNX Runtime's CPU convolutions work on blocks of 8 channels (NCHWc), and other
#: counts fall back to slower kernels. Measured in benchmarks/bench_search.py on the digits CNN:
#: arbitrary counts ran 1.1-2.0x slower than the unpruned model, multiples of 8 0.67-0.95x.
_AUTO_ROUND = 8
_AUTO_MIN_SIZE = 32
_CONVOLUTIONS = frozenset({"Conv", "ConvTranspose"})


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from a duration: a number of seconds, or text such as ``"90s"``, ``"10m"``,
    ``"1h"``, ``"1h30m"`` (a bare number in text is seconds). Raises ValueError naming it."""
    if _is_number(value):
        seconds = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        seconds, rest = 0.0, text
        try:
            if text and text.replace(".", "", 1).isdigit():
                seconds, rest = float(text), ""
            while rest:
                digits = len(rest) - len(rest.lstrip("0123456789."))
                number, unit = rest[:digits], rest[digits:digits + 1]
                if not number or unit not in _DURATION_UNITS:
                    raise ValueError
                seconds += float(number) * _DURATION_UNITS[unit]
                rest = rest[digits + 1:]
        except ValueError:
            raise ValueError(f"'time_limit' must be a duration such as 90s, 10m or 1h, got {value!r}") from None
    else:
        raise ValueError(f"'time_limit' must be a duration such as 90s, 10m or 1h, got {value!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"'time_limit' must be a positive duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as people write it: ``1h``, ``10m``, ``90s`` (whole hours or minutes when it is
    one, else seconds)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:.3g}s" if seconds < 10 else f"{seconds:.0f}s"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_dims(dims: Any) -> dict[str, int]:
    """``{symbol: size}`` for symbolic dimensions (``--dim SYMBOL=N``)."""
    if not isinstance(dims, Mapping):
        raise ValueError(f"'dims' must map dimension names to sizes, e.g. {{'height': 640}}, got {dims!r}")
    for name, size in dims.items():
        if not isinstance(name, str) or not name or not _is_int(size) or size < 1:
            raise ValueError(f"'dims' must map dimension names to positive sizes, got {name!r}: {size!r} "
                             f"(--dim SYMBOL=N on the command line)")
    return dict(dims)


def _check_input_shapes(shapes: Any) -> dict[str, tuple[int, ...]]:
    """``{input: shape}`` (``--input-shape NAME:D0,D1,...``)."""
    if not isinstance(shapes, Mapping):
        raise ValueError(f"'input_shapes' must map input names to shapes, e.g. {{'image': [1, 3, 640, 640]}}, "
                         f"got {shapes!r}")
    out = {}
    for name, shape in shapes.items():
        if (not isinstance(name, str) or not name or isinstance(shape, (str, bytes))
                or not isinstance(shape, (list, tuple)) or not all(_is_int(d) and d >= 1 for d in shape)):
            raise ValueError(f"'input_shapes' must map input names to lists of positive sizes, got {name!r}: "
                             f"{shape!r} (--input-shape NAME:D0,D1,... on the command line)")
        out[name] = tuple(shape)
    return out


@dataclass(frozen=True)
class Limits:
    """Per-group limits.

    ``max_fraction``: never remove more than this fraction of any group (at least ``min_keep``
    units always stay). ``round_to``: the number of units kept is a multiple of this (or all);
    ``"auto"`` (the default) keeps multiples of 8 in convolution groups of 32 channels or more,
    which keeps ONNX Runtime on its fast blocked kernels, and any count elsewhere.
    ``skip``: ids of groups, layers or weights never to touch.
    """

    max_fraction: float = 1.0
    min_keep: int = 1
    round_to: int | Literal["auto"] = "auto"
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _is_number(self.max_fraction) or not 0.0 <= float(self.max_fraction) <= 1.0:
            raise ValueError(f"'max_fraction' must be in [0, 1], got {self.max_fraction!r}")
        if not _is_int(self.min_keep) or self.min_keep < 1:
            raise ValueError(f"'min_keep' must be at least 1, got {self.min_keep!r}")
        if self.round_to != "auto" and (not _is_int(self.round_to) or self.round_to < 1):
            raise ValueError(f"'round_to' must be at least 1 (or 'auto'), got {self.round_to!r}")
        skip = (self.skip,) if isinstance(self.skip, str) else self.skip
        if not all(isinstance(s, str) and s for s in skip):
            raise ValueError(f"'skip' must be a list of group, layer or weight names, got {self.skip!r}")
        object.__setattr__(self, "skip", tuple(skip))  # a TOML or JSON list arrives as a list

    def round_for(self, group: Group) -> int:
        """The multiple ``group`` keeps its unit count at."""
        if self.round_to != "auto":
            return int(self.round_to)
        if group.op_type in _CONVOLUTIONS and group.size >= _AUTO_MIN_SIZE:
            return _AUTO_ROUND
        return 1


@dataclass(frozen=True)
class PruneOptions:
    """One pruning run's settings (see :func:`pyprune.prune` for what each does).

    ``target`` None means the default (``MACs(0.5)``; a one-shot cut given per-group ``ratios``
    is its own target). ``max_drop="auto"`` (the default) means :data:`DEFAULT_MAX_DROP` when
    real data is given and no constraint on synthetic data (agreement on random inputs says
    little about accuracy: the run prunes to the target and reports that fidelity, labelled as
    synthetic). ``search`` holds the options of the chosen strategy (``step``, ``window``,
    ``trials``, ``ratios``, ...), which the strategy itself checks.

    ``metric_output`` names the model output the metric reads (default: the first float output
    that is not a label output). ``dims`` (``{symbol: size}``) and ``input_shapes`` (``{input:
    shape}``) size symbolic input dimensions where no data does (``--dim``, ``--input-shape``).

    Budgets: ``max_evals`` (candidate evaluations) and ``time_limit`` (seconds, or text such as
    ``"10m"``) stop the search like an interrupt once spent; the best state found that meets the
    constraint is shipped and the report says which budget ran out. The time limit counts the whole
    call: the search stops early enough to leave what shipping the result is expected to take (twice
    what setting the problem up took: analysing the model, its first session and runs). ``executor``
    says where candidates are judged (``"local"``: the search's own session; ``"process"``: a pool
    of ``workers`` local processes; ``"ray"``: ``workers`` Ray actors, on the cluster at
    ``ray_address`` or a local one); results are the same whichever is used.
    """

    granularity: str = "channel"
    strategy: str = "greedy"
    target: Target | None = None
    importance: str = "l2"
    max_drop: float | Constraint | None | Literal["auto"] = "auto"
    metric: str | Metric | None = None
    loss: str | Metric | None = None
    recovery: str = "auto"
    holdout: float | None = None
    damp: float | None = None
    block_size: int = 128
    limits: Limits = field(default_factory=Limits)
    reduce: str = "sum"
    normalize: str = "mean"
    nm: tuple[int, int] = (2, 4)
    seed: int = 0
    threads: int | None = None
    batch_size: int | None = None
    measure_latency: bool = True
    checkpoint: float = 0.1
    quiet: bool = False
    max_evals: int | None = None
    time_limit: float | None = None
    executor: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    search: Mapping[str, Any] = field(default_factory=dict)
    # -- what the model and its data are (exports from the field need telling) --------------------
    metric_output: str | None = None
    dims: Mapping[str, int] = field(default_factory=dict)
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from . import importance, metrics
        from .targets import Constraint, Target

        key = self.strategy.strip().lower().replace("-", "_") if isinstance(self.strategy, str) else None
        if key in STRATEGY_ALIASES:
            key, implied = STRATEGY_ALIASES[key]
            object.__setattr__(self, "search", {**implied, **dict(self.search)})
        if key not in STRATEGIES:
            known = ", ".join((*STRATEGIES, *STRATEGY_ALIASES))
            raise ValueError(f"'strategy' must be one of {known}, got {self.strategy!r}")
        object.__setattr__(self, "strategy", key)
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"'granularity' must be one of {', '.join(GRANULARITIES)}, got {self.granularity!r}")
        if self.target is not None and not isinstance(self.target, Target):
            raise TargetError(f"target must be a Sparsity, Params, MACs or Latency target, got {self.target!r}")
        if not isinstance(self.importance, str) or not self.importance:
            raise ValueError(f"'importance' must be a name such as 'l2', got {self.importance!r}")
        importance.needs_data(self.importance)  # raises ValueError listing the known names
        if self.max_drop is not None and self.max_drop != "auto" and not isinstance(self.max_drop, Constraint):
            if not _is_number(self.max_drop):
                raise ValueError(f"'max_drop' must be a number, got {self.max_drop!r}")
            if not (self.max_drop >= 0 and math.isfinite(self.max_drop)):
                raise ValueError(f"'max_drop' must be a non-negative number, got {self.max_drop!r}")
        for name in ("metric", "loss"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, metrics.Metric):
                if not isinstance(value, str):
                    raise ValueError(f"{name!r} must be a metric name or a Metric, got {value!r}")
                metrics.get(value)  # raises ValueError listing the known names
        recovery = self.recovery
        if isinstance(recovery, bool):  # the switch of earlier versions
            recovery = "auto" if recovery else "none"
        if not isinstance(recovery, str) or recovery.strip().lower() not in RECOVERY_CHOICES:
            raise ValueError(f"'recovery' must be one of {', '.join(RECOVERY_CHOICES)}, got {self.recovery!r}")
        object.__setattr__(self, "recovery", recovery.strip().lower())
        if self.holdout is not None and (not _is_number(self.holdout) or not 0.0 <= self.holdout < 1.0):
            raise ValueError(f"'holdout' must be a fraction in [0, 1) or None (automatic), got {self.holdout!r}")
        if isinstance(self.damp, str) and self.damp.strip().lower() == "auto":
            object.__setattr__(self, "damp", None)
        if self.damp is not None and (not _is_number(self.damp) or not 0.0 <= self.damp <= 10.0):
            raise ValueError(f"'damp' must be a number in [0, 10] or 'auto' (None), got {self.damp!r}")
        if not _is_int(self.block_size) or self.block_size < 1:
            raise ValueError(f"'block_size' must be a positive integer, got {self.block_size!r}")
        if not isinstance(self.limits, Limits):
            raise ValueError(f"'limits' must be a Limits, got {self.limits!r}")
        if self.reduce not in importance.REDUCTIONS:
            raise ValueError(f"'reduce' must be one of {', '.join(importance.REDUCTIONS)}, got {self.reduce!r}")
        if self.normalize not in importance.NORMALIZATIONS:
            known = ", ".join(importance.NORMALIZATIONS)
            raise ValueError(f"'normalize' must be one of {known}, got {self.normalize!r}")
        nm = tuple(self.nm)
        if len(nm) != 2 or not all(_is_int(v) for v in nm) or not 0 < nm[0] < nm[1]:
            raise ValueError(f"'nm' must be (N, M) with 0 < N < M, e.g. (2, 4); got {self.nm!r}")
        object.__setattr__(self, "nm", nm)
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"'seed' must be a non-negative integer, got {self.seed!r}")
        for name in ("threads", "batch_size", "max_evals", "workers"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name!r} must be a positive integer or None, got {value!r}")
        if not _is_number(self.checkpoint) or not 0.0 < self.checkpoint <= 1.0:
            raise ValueError(f"'checkpoint' must be a fraction in (0, 1], got {self.checkpoint!r}")
        if self.time_limit is not None:
            object.__setattr__(self, "time_limit", parse_duration(self.time_limit))
        if self.executor not in EXECUTORS:
            raise ValueError(f"'executor' must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address):
            raise ValueError(f"'ray_address' must be an address such as 'auto' or 'ray://host:10001', "
                             f"got {self.ray_address!r}")
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError("'ray_address' applies to executor='ray'")
        if not isinstance(self.search, Mapping):
            raise ValueError(f"'search' must be a mapping of strategy options, got {self.search!r}")
        object.__setattr__(self, "search", dict(self.search))
        if self.metric_output is not None and (not isinstance(self.metric_output, str) or not self.metric_output):
            raise ValueError(f"'metric_output' must be the name of a model output, got {self.metric_output!r}")
        object.__setattr__(self, "dims", _check_dims(self.dims))
        object.__setattr__(self, "input_shapes", _check_input_shapes(self.input_shapes))

    def resolved_max_drop(self, synthetic: bool) -> float | Constraint | None:
        """The constraint in force: ``"auto"`` is :data:`DEFAULT_MAX_DROP` on real data, none on
        synthetic data."""
        if self.max_drop == "auto":
            return None if synthetic else DEFAULT_MAX_DROP
        return self.max_drop

    def with_(self, **changes: Any) -> PruneOptions:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], base: PruneOptions | None = None) -> PruneOptions:
        """Options from flat keyword settings (as :func:`pyprune.prune` takes them): fields by
        name, the per-group limits (``round_to``, ``skip``, ``max_fraction``, ``min_keep``) flat
        or as ``limits=``, and anything else as the strategy's own options (``search``)."""
        base = base or cls()
        own = {f.name for f in fields(cls)}
        limit_keys = {f.name for f in fields(Limits)}
        chosen = {k: v for k, v in settings.items() if k in own}
        limits = {k: v for k, v in settings.items() if k in limit_keys}
        search = {k: v for k, v in settings.items() if k not in own and k not in limit_keys}
        if limits:
            chosen["limits"] = Limits(**{**vars(chosen.get("limits", base.limits)), **limits})
        if search:
            chosen["search"] = {**base.search, **chosen.get("search", {}), **search}
        return replace(base, **chosen) if chosen else base

    def holdout_for(self, samples: int, synthetic: bool = False, constrained: bool = True) -> float:
        """The fraction of ``samples`` held out: ``holdout`` when given, else
        :data:`DEFAULT_HOLDOUT` when there are at least :data:`HOLDOUT_MIN_SAMPLES` real samples and
        a constraint to check on them (without one, every sample serves recovery)."""
        if self.holdout is not None:
            return float(self.holdout)
        enough = samples >= HOLDOUT_MIN_SAMPLES and not synthetic
        return DEFAULT_HOLDOUT if enough and constrained else 0.0

    def describe(self) -> str:
        """One line: what is pruned, how, to what, under which constraint."""
        goal = "the default target" if self.target is None else self.target.describe()
        drop = ("no constraint" if self.max_drop is None else
                f"max drop {DEFAULT_MAX_DROP} (none on synthetic data)" if self.max_drop == "auto" else
                f"max drop {self.max_drop}")
        return f"{self.granularity} by {self.importance}, {self.strategy} search to {goal}, {drop}"
