"""Every physical edit of a model: remove channel/neuron units, remove layers, apply weight masks,
fold recovery corrections into weights, and the two reference edits the search and the tests
judge removal by (masks on a group's channels, gates on layers).

Each edit returns a new :class:`~pyprune.graph.Model`; the input is never modified.
"""

from __future__ import annotations

from ._fold import bias_after, fold_output_affine, replace_input
from ._gates import gate_layers
from ._layers import remove_layers
from ._masking import insert_masks, keep_mask, mask_vectors
from ._units import removal_plan, remove_units
from ._weights import apply_weight_masks

__all__ = [
    "remove_units",
    "removal_plan",
    "remove_layers",
    "apply_weight_masks",
    "fold_output_affine",
    "replace_input",
    "bias_after",
    "insert_masks",
    "mask_vectors",
    "keep_mask",
    "gate_layers",
]
