"""Applying weight masks: zeroed elements in place of the old values, nothing duplicated."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import core
from ..graph import Model
from ..graph._weights import FLOAT_TYPES

__all__ = ["apply_weight_masks"]


def apply_weight_masks(model: Model, masks: Mapping[str, np.ndarray]) -> Model:
    """A copy of ``model`` whose weights are zeroed where their bool mask is False.

    Each masked weight replaces its initializer (nothing is duplicated, so the saved file is not
    larger). Any float initializer may be masked; ``model`` itself is unchanged. Unknown names,
    non-bool masks or masks of the wrong shape raise before anything is changed.
    """
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping {{weight name: bool mask}}, not {type(masks).__name__}")
    checked = {}
    for name, mask in masks.items():
        if not model.is_weight(name):
            raise ValueError(f"no weight named {name!r} in this model")
        if model.elem_type(name) not in FLOAT_TYPES:
            raise ValueError(f"weight {name!r} is not a float tensor; only float weights are masked")
        mk = np.asarray(mask)
        if mk.dtype != np.bool_:
            raise TypeError(f"mask for {name!r} has dtype {mk.dtype}; expected bool (True = keep)")
        shape = model.weight(name).shape
        if mk.shape != shape:
            raise ValueError(f"mask for {name!r} has shape {mk.shape}, the weight {shape}")
        checked[name] = mk
    new = model.copy()
    for name, mk in checked.items():
        new.set_weight(name, core.apply_mask(new.weight(name), mk))
    return new
