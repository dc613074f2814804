"""ONNX Runtime contrib ops for shape inference: standard-op stand-ins with the same output shapes.

Models saved after ONNX Runtime's graph optimisations (its transformer optimizer, or a session's
``optimized_model_filepath``) hold fused ``com.microsoft`` ops onnx has no schema for, so onnx's
shape inference stops at the first one and every shape after it is unknown. For inference only
(never in a model pyprune writes), each such node is replaced by standard ops whose outputs have
the shapes the fused op's outputs have: SkipLayerNormalization is shaped like its input, FusedConv
like a Conv, Attention like a MatMul of its input by a ``[hidden, v_hidden]`` matrix, and so on.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import helper

__all__ = ["standins", "CONTRIB_DOMAIN", "is_contrib"]

CONTRIB_DOMAIN = "com.microsoft"

_PREFIX = "pyprune_standin_"

# Outputs shaped like input 0 (their optional statistics outputs are left unknown).
_LIKE_INPUT = frozenset({
    "Gelu", "QuickGelu", "BiasGelu", "FastGelu", "BiasAdd", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "LayerNormalization", "SimplifiedLayerNormalization",
})  # fmt: skip
# The sum output (input + skip + bias) of the skip normalisations is output 3.
_SUM_OUTPUT = {"SkipLayerNormalization": 3, "SkipSimplifiedLayerNormalization": 3}

#: Contrib ops that ONNX Runtime registers in the default domain: RMS normalisation, and
#: LayerNormalization for opsets before 17 (onnx has a schema only from 17; a stand-in is
#: harmless after that, its output is shaped like its input either way). onnx's checker refuses
#: both below those versions, so such models are refused on load; the stand-ins serve models
#: checked elsewhere (``Model(proto)`` directly).
DEFAULT_DOMAIN_CONTRIB = frozenset({"SimplifiedLayerNormalization", "LayerNormalization"})


#: ai.onnx.ml ops whose output is shaped like their input: onnx has their schemas but infers no
#: shape through them, so a pipeline's scaler hides every shape after it (skl2onnx writes
#: ``Scaler`` before the model of a ``StandardScaler`` pipeline).
_ML_LIKE_INPUT = frozenset({"Scaler", "Normalizer", "Imputer", "Binarizer"})


def is_contrib(node: onnx.NodeProto) -> bool:
    """A node onnx infers no shapes through but ONNX Runtime runs: com.microsoft ops, the
    default-domain contrib ops such as SimplifiedLayerNormalization, and shape-preserving
    ai.onnx.ml ops."""
    if node.domain == CONTRIB_DOMAIN:
        return True
    if node.domain == "ai.onnx.ml":
        return node.op_type in _ML_LIKE_INPUT
    return node.domain in ("", "ai.onnx") and node.op_type in DEFAULT_DOMAIN_CONTRIB


def _attrs(node: onnx.NodeProto, drop: frozenset[str] = frozenset()) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in drop}


def _fresh(node: onnx.NodeProto, what: str) -> str:
    return f"{_PREFIX}{node.name or node.output[0]}_{what}"


def _like_input(node: onnx.NodeProto, dims: Callable[[str], list | None]) -> list[onnx.NodeProto]:
    out = [helper.make_node("Identity", [node.input[0]], [node.output[0]])]
    k = _SUM_OUTPUT.get(node.op_type)
    if k is not None and len(node.output) > k and node.output[k]:
        out.append(helper.make_node("Identity", [node.input[0]], [node.output[k]]))
    return out


def _fused_conv(node: onnx.NodeProto, dims: Callable[[str], list | None]) -> list[onnx.NodeProto]:
    attrs = _attrs(node, frozenset({"activation", "activation_params"}))
    return [helper.make_node("Conv", list(node.input[:3]), [node.output[0]], **attrs)]


def _fused_matmul(node: onnx.NodeProto, dims: Callable[[str], list | None]) -> list[onnx.NodeProto] | None:
    attrs = _attrs(node)
    if attrs.get("transBatchA", 0) or attrs.get("transBatchB", 0):
        return None
    nodes, operands = [], []
    for k, flag in enumerate(("transA", "transB")):
        name = node.input[k]
        if attrs.get(flag, 0):
            shape = dims(name)
            if shape is None or len(shape) < 2:
                return None
            perm = list(range(len(shape)))
            perm[-2], perm[-1] = perm[-1], perm[-2]
            swapped = _fresh(node, f"t{k}")
            nodes.append(helper.make_node("Transpose", [name], [swapped], perm=perm))
            name = swapped
        operands.append(name)
    nodes.append(helper.make_node("MatMul", operands, [node.output[0]]))
    return nodes


def _attention(node: onnx.NodeProto, dims: Callable[[str], list | None]) -> list[onnx.NodeProto] | None:
    """Output 0 is [batch, seq, v_hidden]: the input times a [hidden, v_hidden] stub matrix."""
    weight = dims(node.input[1]) if len(node.input) > 1 else None
    if weight is None or len(weight) != 2 or not all(isinstance(d, int) for d in weight):
        return None
    sizes = _attrs(node).get("qkv_hidden_sizes")
    v_hidden = int(sizes[2]) if sizes else weight[1] // 3
    stub = _fresh(node, "v")
    value = onnx.TensorProto(name=stub, data_type=onnx.TensorProto.FLOAT, dims=[weight[0], v_hidden])
    # dims without data: shape inference reads the dims only
    return [helper.make_node("Constant", [], [stub], value=value),
            helper.make_node("MatMul", [node.input[0], stub], [node.output[0]])]


def _embed_layer_norm(node: onnx.NodeProto, dims: Callable[[str], list | None]) -> list[onnx.NodeProto]:
    """Output 0 is the word embedding gathered by the token ids: [batch, seq, hidden]."""
    return [helper.make_node("Gather", [node.input[2], node.input[0]], [node.output[0]], axis=0)]


_STANDINS: dict[str, Callable[[onnx.NodeProto, Callable[[str], list | None]], list[onnx.NodeProto] | None]] = {
    **{op: _like_input for op in _LIKE_INPUT | _ML_LIKE_INPUT},
    "FusedConv": _fused_conv,
    "FusedMatMul": _fused_matmul,
    "Attention": _attention,
    "EmbedLayerNormalization": _embed_layer_norm,
}


def standins(node: onnx.NodeProto, dims: Callable[[str], list | None]) -> list[onnx.NodeProto] | None:
    """Standard nodes computing outputs shaped like ``node``'s (None: not a known contrib op).

    ``dims`` gives the dims of an initializer (or None), for ops whose output size is read off a
    weight.
    """
    if not is_contrib(node):
        return None
    make = _STANDINS.get(node.op_type)
    return None if make is None else make(node, dims)
