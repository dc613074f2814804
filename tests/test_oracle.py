"""The oracle: physically removing units equals masking them, for every pattern and opset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pyprune.graph import DependencyGraph, load
from pyprune.surgery import insert_masks, remove_units

sys.path.insert(0, str(Path(__file__).parent))  # the generated test models live next to this
from _models import CATALOGUE, OPSETS, random_inputs  # noqa: E402


def _run(model, feeds):
    session = ort.InferenceSession(
        model.proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_removal_equals_masking(name, opset):
    case = CATALOGUE[name]
    batch = "N" if opset in (11, 17, 21) else 2  # symbolic and fixed batch across opsets
    model = load(case.build(opset, batch))
    graph = DependencyGraph(model)
    prunable = graph.prunable_groups
    assert len(prunable) == case.prunable, [(g.id, g.frozen) for g in graph.groups]
    feeds = random_inputs(model.proto, batch=2, seed=opset)
    reference = _run(model, feeds)

    @settings(max_examples=4, deadline=None, database=None)
    @given(st.data())
    def check(data):
        chosen = data.draw(
            st.lists(st.sampled_from(prunable), min_size=1, unique_by=lambda g: g.id)
        )
        removals, keep = {}, {}
        for group in chosen:
            if group.size < 2:
                continue
            idx = data.draw(
                st.lists(st.integers(0, group.size - 1), min_size=1, max_size=group.size - 1,
                         unique=True)
            )
            removals[group.id] = idx
            keep[group.id] = ~np.isin(np.arange(group.size), idx)
        try:
            removed = remove_units(model, removals, graph)
        except ValueError as exc:  # emptying a Split/Slice output is refused by design
            assert "empty" in str(exc)
            assume(False)
        onnx.checker.check_model(removed.proto, full_check=True)
        masked = insert_masks(model, keep, graph)
        got, want = _run(removed, feeds), _run(masked, feeds)
        for g, w, r in zip(got, want, reference):
            assert g.shape == w.shape == r.shape
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        assert removed.params() < model.params()

    check()
