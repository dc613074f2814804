"""The models of ``bench_corpus.py``: real third-party exports, built from code on this machine.

Every entry is made the way a user of that exporter makes it (the exporter's default settings
unless the entry says otherwise), with random seeded weights or a few seconds of training, and
comes with a small calibration file of realistic inputs. Nothing is downloaded from a model hub:
architectures come from torchvision, timm, transformers, scikit-learn, Keras and PaddlePaddle
definitions, weights from their initialisers.

One function per model, ``MODELS`` maps a name to it. A builder writes ``NAME.onnx`` (plus the
exporter's external-data file, if the exporter writes one) into the directory it is given and
returns a :class:`Built` with the calibration arrays and a few facts about the export. Use
:func:`build` to get a cached entry (``NAME.onnx``, ``NAME.npz``, ``NAME.json``).

Calibration files hold arrays keyed by input name. An input listed in ``Built.shared`` is not a
per-sample input (a scalar, a recurrent state without batch axis): its array is the one value
fed with every sample, stored with the exact shape the model takes. Every other array holds the
samples along axis 0, each sample shaped like the model input with a batch of 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import warnings
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Built", "Entry", "MODELS", "QUICK", "build"]

N_IMAGES = 32          # calibration samples for image models
N_TEXT, SEQ = 32, 32   # calibration samples and tokens for text models


@dataclass
class Built:
    """What a builder returns besides the ``.onnx`` file it wrote."""

    data: dict[str, np.ndarray]
    source: str                          # architecture / exporter, as printed in the table
    shared: tuple[str, ...] = ()         # inputs fed whole with every sample (see module doc)
    note: str = ""                       # anything emulated or unusual about this export


@dataclass
class Entry:
    """A cached corpus entry: where its files are and what its builder said about it."""

    name: str
    model: Path
    data: Path
    source: str
    shared: tuple[str, ...] = ()
    note: str = ""
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------ helpers
def _rng(name: str) -> np.random.Generator:
    """A generator seeded by the model name, so each entry's data is reproducible on its own."""
    # Python's hash() of a str is salted per process; crc32 is stable across runs.
    return np.random.default_rng(zlib.crc32(name.encode()))


def images(name: str, n: int, c: int, h: int, w: int, layout: str = "NCHW") -> np.ndarray:
    """Image-like float32 inputs: smooth low-frequency structure plus pixel noise, ImageNet-normalised.

    Pure white noise has no spatial correlation, which makes every convolution filter look alike
    to activation statistics; upsampled coarse noise behaves more like photographs.
    """
    import torch

    rng = _rng(name)
    coarse = torch.from_numpy(rng.standard_normal((n, c, max(h // 8, 2), max(w // 8, 2)),
                                                  dtype=np.float32))
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear",
                                        align_corners=False).numpy()
    x = x + 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
    x = (x / x.std()).astype(np.float32)
    return x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x


def _calibrate_batchnorm(model, x: np.ndarray) -> None:
    """Give BatchNorm layers varied affine parameters and statistics measured on ``x``.

    Fresh torch BatchNorms hold mean 0, variance 1, scale 1, shift 0, so the exporter's folding
    would be a no-op and every channel would look alike. Trained networks differ per channel;
    setting scale/shift at random and then measuring the running statistics on image-like data
    (cumulative average over one pass) keeps activations in range, as training does.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        with torch.no_grad():
            bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=gen))
            bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=gen))
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for chunk in np.array_split(x, max(1, len(x) // 16)):
            model(torch.from_numpy(chunk))
    model.eval()


@contextlib.contextmanager
def _quiet():
    """Silence exporters' progress prints, INFO logs and tracer warnings while building."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.INFO)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _quiet_native():
    """Silence output written by native code (paddle2onnx logs from C++ to file descriptors)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _torch_export(model, args: tuple, path: Path, input_names: list[str],
                  output_names: list[str], dynamic_axes: dict | None,
                  exporter: str = "dynamo", opset: int | None = None) -> None:
    """``torch.onnx.export`` as a user calls it: the default (dynamo) exporter, or the TorchScript one.

    The dynamo exporter writes weights to ``PATH.data`` next to the model (its default); the
    TorchScript exporter writes one file. Both fold BatchNorm into the preceding Conv in eval mode.
    """
    import torch

    kwargs = {"input_names": input_names, "output_names": output_names,
              "dynamic_axes": dynamic_axes}
    if opset is not None:
        kwargs["opset_version"] = opset
    if exporter == "torchscript":
        kwargs["dynamo"] = False
    model.eval()
    with _quiet(), torch.no_grad():
        torch.onnx.export(model, args, str(path), **kwargs)


def _vision(name: str, path: Path, net, size: int, source: str, exporter: str = "dynamo",
            opset: int | None = None, calibrate: bool = True) -> Built:
    """Export an image classifier with a symbolic batch axis; calibration: 32 image-like samples."""
    import torch

    torch.manual_seed(0)
    x = images(name, N_IMAGES, 3, size, size)
    if calibrate:
        _calibrate_batchnorm(net, x)
    net.eval()
    _torch_export(net, (torch.from_numpy(x[:1]),), path, ["input"], ["logits"],
                  {"input": {0: "batch"}, "logits": {0: "batch"}}, exporter, opset)
    return Built({"input": x}, source)


def _tv(ctor: str, **kwargs):
    import torch
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, ctor)(weights=None, **kwargs)


def _timm(arch: str, **kwargs):
    import timm
    import torch

    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, **kwargs)


# ----------------------------------------------------------------- torchvision / timm (dynamo)
TV = "torchvision/torch.onnx"


def resnet18(path: Path) -> Built:
    return _vision("resnet18", path, _tv("resnet18"), 96, TV)


def resnet50(path: Path) -> Built:
    return _vision("resnet50", path, _tv("resnet50"), 96, TV)


def mobilenet_v2(path: Path) -> Built:
    return _vision("mobilenet_v2", path, _tv("mobilenet_v2"), 96, TV)


def mobilenet_v3_small(path: Path) -> Built:
    return _vision("mobilenet_v3_small", path, _tv("mobilenet_v3_small"), 96, TV)


def efficientnet_b0(path: Path) -> Built:
    return _vision("efficientnet_b0", path, _timm("efficientnet_b0"), 96, "timm/torch.onnx")


def shufflenet_v2(path: Path) -> Built:
    return _vision("shufflenet_v2", path, _tv("shufflenet_v2_x1_0"), 96, TV)


def squeezenet(path: Path) -> Built:
    # The TorchScript exporter (dynamo=False), still what many tutorials and older code call.
    return _vision("squeezenet", path, _tv("squeezenet1_1"), 96, TV + " (TorchScript)",
                   exporter="torchscript", opset=13)


def densenet121(path: Path) -> Built:
    return _vision("densenet121", path, _tv("densenet121"), 64, TV)


def inception_v3(path: Path) -> Built:
    # 96x96 is about the smallest input its stride pattern accepts; aux head off as in eval use.
    net = _tv("inception_v3", aux_logits=False, init_weights=True)
    return _vision("inception_v3", path, net, 96, TV)


def convnext_tiny(path: Path) -> Built:
    import torch

    net = _tv("convnext_tiny")
    # torchvision initialises every block's layer scale to 1e-6, which makes each residual
    # block a near no-op until trained (pruning inside them then changes nothing). Trained
    # ConvNeXts carry layer scales of roughly 0.05-1; draw them from that range.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(0.05 + 0.45 * torch.rand(p.shape, generator=gen))
    return _vision("convnext_tiny", path, net, 64, TV)


def regnet_y_400mf(path: Path) -> Built:
    return _vision("regnet_y_400mf", path, _tv("regnet_y_400mf"), 96, TV)


def vit_tiny(path: Path) -> Built:
    # timm's ViT-Ti/16 at 96x96: 36 patches + class token, 12 blocks of width 192.
    return _vision("vit_tiny", path, _timm("vit_tiny_patch16_224", img_size=96), 96,
                   "timm/torch.onnx", calibrate=False)


def lraspp_dynamic_hw(path: Path) -> Built:
    """Segmentation (LR-ASPP, MobileNetV3-large backbone) with symbolic batch, height and width."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21)
    x = images("lraspp_dynamic_hw", 16, 3, 128, 160)
    _calibrate_batchnorm(net, x)

    class Out(torch.nn.Module):  # the torchvision model returns a dict; export its tensor
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            return self.inner(image)["out"]

    axes = {0: "batch", 2: "height", 3: "width"}
    _torch_export(Out(net), (torch.from_numpy(x[:1]),), path, ["image"], ["out"],
                  {"image": axes, "out": axes})
    return Built({"image": x}, TV, note="symbolic batch, height and width")


# -------------------------------------------------------------------- opset 9 (model-zoo era)
def _opset9(name: str, path: Path, ctor: str, export_opset: int) -> Built:
    """TorchScript export at ``export_opset``, then ``onnx.version_converter`` to opset 9.

    onnx's version converter has no downgrade adapter for MaxPool 10 -> 9 (nor for most ops
    above opset 10), so networks with MaxPool are exported at opset 9 and the converter call is
    a no-op for them; MobileNetV2 (no MaxPool) really goes 10 -> 9 through the converter.
    """
    from onnx import version_converter

    built = _vision(name, path, _tv(ctor), 96, TV, exporter="torchscript", opset=export_opset)
    model = version_converter.convert_version(onnx.load(str(path)), 9)
    onnx.save(model, str(path))
    built.source = f"{TV} opset {export_opset} + version_converter"
    return built


def resnet18_opset9(path: Path) -> Built:
    return _opset9("resnet18_opset9", path, "resnet18", 9)


def mobilenet_v2_opset9(path: Path) -> Built:
    return _opset9("mobilenet_v2_opset9", path, "mobilenet_v2", 10)


def squeezenet_opset9(path: Path) -> Built:
    return _opset9("squeezenet_opset9", path, "squeezenet1_1", 9)


# ---------------------------------------------------------------------------- transformers
def _tokens(name: str, vocab: int, cls: int | None, sep: int | None) -> dict[str, np.ndarray]:
    """Token batches as a tokenizer pads them: [CLS] ... [SEP] then 0-padding, mask 1/0."""
    rng = _rng(name)
    ids = rng.integers(1000, vocab, size=(N_TEXT, SEQ), dtype=np.int64)
    mask = np.ones_like(ids)
    for i, length in enumerate(rng.integers(SEQ // 3, SEQ + 1, size=N_TEXT)):
        if cls is not None:
            ids[i, 0] = cls
        if sep is not None:
            ids[i, length - 1] = sep
        ids[i, length:] = 0
        mask[i, length:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _text_export(path: Path, model, fields: tuple[str, ...], data: dict, exporter="dynamo",
                 opset=None) -> None:
    """Export a transformers model with inputs (input_ids, attention_mask), symbolic batch and
    sequence axes, and the named ``fields`` of its output object as plain tensor outputs."""
    import torch

    class Wrapped(torch.nn.Module):  # HF models return ModelOutput objects, not tensors
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            return tuple(getattr(out, f) for f in fields)

    axes = {0: "batch", 1: "sequence"}
    dyn = {"input_ids": axes, "attention_mask": axes}
    dyn.update({f: (axes if f != "pooler_output" else {0: "batch"}) for f in fields})
    args = (torch.from_numpy(data["input_ids"][:2]), torch.from_numpy(data["attention_mask"][:2]))
    _torch_export(Wrapped().eval(), args, path, ["input_ids", "attention_mask"], list(fields),
                  dyn, exporter, opset)


def _bert_config(**kwargs):
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=4,
                      num_attention_heads=4, intermediate_size=1024, **kwargs)


def bert(path: Path) -> Built:
    """BERT (4 layers, hidden 256) from a config, default exporter: feature extraction outputs."""
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    model = BertModel(_bert_config()).eval()
    data = _tokens("bert", 30522, 101, 102)
    _text_export(path, model, ("last_hidden_state", "pooler_output"), data)
    return Built(data, "transformers/torch.onnx")


def bert_ort_optimized(path: Path) -> Built:
    """BERT exported the Optimum way (TorchScript, eager attention), then ORT's transformer optimizer.

    The optimizer recognises the TorchScript exporter's attention pattern and fuses it into
    com.microsoft Attention, EmbedLayerNormalization, SkipLayerNormalization and BiasGelu; on the
    dynamo export it finds no Attention (checked with transformers 5 and ORT 1.32).
    """
    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import BertModel

    torch.manual_seed(0)
    model = BertModel(_bert_config(attn_implementation="eager")).eval()
    data = _tokens("bert_ort_optimized", 30522, 101, 102)
    raw = path.with_name(path.stem + ".raw.onnx")
    _text_export(raw, model, ("last_hidden_state", "pooler_output"), data,
                 exporter="torchscript", opset=17)
    with _quiet():
        opt = optimize_model(str(raw), model_type="bert", num_heads=4, hidden_size=256)
    opt.save_model_to_file(str(path))
    raw.unlink()
    fused = sorted({n.op_type for n in opt.model.graph.node if n.domain == "com.microsoft"})
    return Built(data, "transformers/torch.onnx + ORT optimizer",
                 note="com.microsoft: " + ", ".join(fused))


def distilbert(path: Path) -> Built:
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=30522, dim=256, n_layers=4, n_heads=4, hidden_dim=1024)
    model = DistilBertModel(cfg).eval()
    data = _tokens("distilbert", 30522, 101, 102)
    _text_export(path, model, ("last_hidden_state",), data)
    return Built(data, "transformers/torch.onnx")


def gpt2(path: Path) -> Built:
    """GPT-2-style decoder (4 layers, width 256, 8k vocabulary, tied LM head), no KV cache."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=8192, n_positions=256, n_embd=256, n_layer=4, n_head=4,
                     bos_token_id=8191, eos_token_id=8191, use_cache=False)
    model = GPT2LMHeadModel(cfg).eval()
    data = _tokens("gpt2", 8192, None, None)
    _text_export(path, model, ("logits",), data)
    return Built(data, "transformers/torch.onnx")


# --------------------------------------------------------------------------------- skl2onnx
def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.25, random_state=0)


def _skl(name: str, path: Path, clf, zipmap: bool) -> Built:
    """Train on digits, convert with skl2onnx; calibration: 64 held-out digits."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    xtr, xte, ytr, _ = _digits()
    with _quiet():
        clf.fit(xtr, ytr)
    options = None if zipmap else {id(clf): {"zipmap": False}}
    onx = convert_sklearn(clf, initial_types=[("X", FloatTensorType([None, 64]))],
                          options=options)
    onnx.save(onx, str(path))
    return Built({"X": xte[:64]}, "scikit-learn/skl2onnx" + ("" if zipmap else " zipmap=False"))


def sklearn_mlp_zipmap(path: Path) -> Built:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0)
    return _skl("sklearn_mlp_zipmap", path, clf, zipmap=True)


def sklearn_mlp(path: Path) -> Built:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0)
    return _skl("sklearn_mlp", path, clf, zipmap=False)


def sklearn_logreg_zipmap(path: Path) -> Built:
    from sklearn.linear_model import LogisticRegression

    return _skl("sklearn_logreg_zipmap", path, LogisticRegression(max_iter=500), zipmap=True)


def sklearn_logreg(path: Path) -> Built:
    from sklearn.linear_model import LogisticRegression

    return _skl("sklearn_logreg", path, LogisticRegression(max_iter=500), zipmap=False)


# ------------------------------------------------------------------------------------ Keras 3
def _keras():
    # Keras 3 exports ONNX from its torch backend (torch.onnx under the hood); the layers stay
    # channels-last (NHWC), so every Conv is wrapped in Transposes, as tf2onnx also emits.
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(0)
    return keras


def _keras_export(model, path: Path, x: np.ndarray) -> None:
    import torch

    model(x[:1])  # Keras refuses to export a model that was never called
    with _quiet(), torch.no_grad():
        model.export(str(path), format="onnx", verbose=False)


def keras_mlp(path: Path) -> Built:
    keras = _keras()
    xtr, xte, ytr, _ = _digits()
    model = keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=10, batch_size=64, verbose=0)
    _keras_export(model, path, xte)
    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    return Built({name: xte[:64]}, f"Keras {keras.__version__} (torch backend)")


def keras_cnn(path: Path) -> Built:
    keras = _keras()
    xtr, xte, ytr, _ = _digits()
    xtr, xte = xtr.reshape(-1, 8, 8, 1), xte.reshape(-1, 8, 8, 1)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=5, batch_size=64, verbose=0)
    _keras_export(model, path, xte)
    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    return Built({name: xte[:64]}, f"Keras {keras.__version__} (torch backend), NHWC")


# --------------------------------------------------------------------------------- paddle2onnx
def _paddle_export(path: Path) -> np.ndarray:
    """PaddlePaddle's MobileNetV3-small (Conv-BN-HardSwish, SE with HardSigmoid) via paddle2onnx."""
    import tempfile

    import paddle
    import paddle2onnx

    paddle.seed(0)
    net = paddle.vision.models.mobilenet_v3_small(pretrained=False, num_classes=1000)
    x = images("paddle", N_IMAGES, 3, 96, 96)
    # Measure BatchNorm statistics on image-like data (paddle's defaults are mean 0, var 1).
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            layer._momentum = 0.0  # running stats := statistics of the last batch
    net.train()
    with paddle.no_grad():
        net(paddle.to_tensor(x))
    net.eval()
    with tempfile.TemporaryDirectory() as tmp, _quiet(), _quiet_native():
        spec = [paddle.static.InputSpec(shape=[None, 3, 96, 96], dtype="float32", name="image")]
        paddle.jit.save(net, f"{tmp}/model", input_spec=spec)
        paddle2onnx.export(f"{tmp}/model.json", f"{tmp}/model.pdiparams", str(path),
                           opset_version=11)
    return x


def paddle_mobilenet_v3(path: Path) -> Built:
    import paddle2onnx

    x = _paddle_export(path)
    return Built({"image": x}, f"PaddlePaddle/paddle2onnx {paddle2onnx.__version__}")


def paddle_constant_weights(path: Path) -> Built:
    """The paddle2onnx export rewritten as older paddle2onnx releases wrote files.

    paddle2onnx 1.x kept every weight in a ``Constant`` node and named the batch axis
    ``p2o.DynamicDimension.0``; 2.x (installed here) writes initializers and
    ``DynamicDimension.0``. The graph is the real export; only those two things are changed.
    """
    import paddle2onnx

    x = _paddle_export(path)
    model = onnx.load(str(path))
    graph = model.graph
    constants = [helper.make_node("Constant", [], [init.name], value=init,
                                  name=f"p2o.Constant.{i}")
                 for i, init in enumerate(graph.initializer)]
    del graph.initializer[:]
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = "p2o." + dim.dim_param
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return Built({"image": x}, f"paddle2onnx {paddle2onnx.__version__}, 1.x style",
                 note="weights moved to Constant nodes, batch axis p2o.DynamicDimension.0 "
                      "(as paddle2onnx 1.x wrote them)")


# ------------------------------------------------------------------------------ control flow
def torch_cond(path: Path) -> Built:
    """A CNN whose middle block is chosen by ``torch.cond`` at run time: an ``If`` whose branches
    read Conv weights from the outer graph (what the dynamo exporter emits).

    The gate skips the heavy block on near-empty inputs (mean stem activation below a floor);
    the floor is set below every calibration sample, so the data runs the heavy branch, as a
    deployed gate runs its common branch.
    """
    import torch
    from torch import nn

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU())
            self.heavy = nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(),
                                       nn.Conv2d(64, 64, 3, 1, 1))
            self.light = nn.Conv2d(64, 64, 1)
            self.tail = nn.Sequential(nn.ReLU(), nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU())
            self.fc = nn.Linear(128, 10)
            self.floor = 0.0

        def forward(self, x):
            h = self.stem(x)
            h = torch.cond(h.mean() > self.floor, lambda t: self.heavy(t), lambda t: self.light(t),
                           (h,))
            return self.fc(self.tail(h).mean((2, 3)))

    torch.manual_seed(0)
    x = images("torch_cond", N_IMAGES, 3, 64, 64)
    net = Gated().eval()
    with torch.no_grad():
        means = net.stem(torch.from_numpy(x)).mean((1, 2, 3)).numpy()
    net.floor = float(means.min()) * 0.5
    _torch_export(net, (torch.from_numpy(x[:1]),), path, ["input"], ["logits"],
                  {"input": {0: "batch"}, "logits": {0: "batch"}})
    return Built({"input": x}, "torch.cond/torch.onnx")


def onnx_loop(path: Path) -> Built:
    """An MLP that refines its hidden state three times in a ``Loop`` whose body holds its own
    weights (initializers inside the subgraph), written with onnx.helper."""
    rng = _rng("onnx_loop")

    def dense(name: str, fan_in: int, fan_out: int) -> list[TensorProto]:
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(np.float32)
        b = (0.1 * rng.standard_normal(fan_out)).astype(np.float32)
        return [numpy_helper.from_array(w, name + ".weight"), numpy_helper.from_array(b, name + ".bias")]

    body = helper.make_graph(
        [helper.make_node("Gemm", ["h_in", "body.weight", "body.bias"], ["pre"]),
         helper.make_node("Relu", ["pre"], ["act"]),
         helper.make_node("Add", ["h_in", "act"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "refine",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["batch", 128])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", 128])],
        initializer=dense("body", 128, 128))
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h0"]),
         helper.make_node("Relu", ["h0"], ["h1"]),
         helper.make_node("Loop", ["trips", "keep_going", "h1"], ["h2"], body=body),
         helper.make_node("Gemm", ["h2", "fc2.weight", "fc2.bias"], ["h3"]),
         helper.make_node("Relu", ["h3"], ["h4"]),
         helper.make_node("Gemm", ["h4", "fc3.weight", "fc3.bias"], ["logits"])],
        "loop_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[*dense("fc1", 64, 128), *dense("fc2", 128, 64), *dense("fc3", 64, 10),
                     numpy_helper.from_array(np.array(3, np.int64), "trips"),
                     numpy_helper.from_array(np.array(True), "keep_going")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="onnx.helper")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    _, xte, _, _ = _digits()
    return Built({"x": xte[:64]}, "onnx.helper (Loop)")


# ------------------------------------------------------------------------- streaming audio
def streaming_vad(path: Path) -> Built:
    """A streaming voice-activity model in the style of Silero VAD: one 512-sample chunk per call,
    a scalar int64 sample rate and a GRU state ``[2, 64]`` with no batch axis in and out."""
    import torch
    from torch import nn

    class Stream(nn.Module):
        def __init__(self):
            super().__init__()
            self.frontend = nn.Conv1d(1, 64, 64, stride=32, padding=16)
            self.encoder = nn.Sequential(nn.ReLU(), nn.Conv1d(64, 128, 3, padding=1), nn.ReLU(),
                                         nn.Conv1d(128, 64, 3, stride=2, padding=1), nn.ReLU())
            self.gru = nn.GRU(64, 64, num_layers=2, batch_first=True)
            self.head = nn.Linear(64, 1)

        def forward(self, chunk, sr, state):
            scale = sr.to(torch.float32) / 16000.0
            h = self.encoder(self.frontend(chunk.unsqueeze(1) * scale))
            y, new_state = self.gru(h.transpose(1, 2), state.unsqueeze(1))
            return torch.sigmoid(self.head(y[:, -1])), new_state.squeeze(1)

    torch.manual_seed(0)
    rng = _rng("streaming_vad")
    # Speech-like chunks: a few decaying harmonics at random pitch plus noise.
    t = np.arange(512) / 16000.0
    chunks = []
    for _ in range(N_TEXT):
        f0 = rng.uniform(90, 300)
        wave = sum(rng.uniform(0, 1) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3))
                   for k in range(1, 6))
        chunks.append(0.3 * wave + 0.05 * rng.standard_normal(512))
    chunk = np.asarray(chunks, np.float32)
    sr = np.array(16000, np.int64)
    state = (0.1 * rng.standard_normal((2, 64))).astype(np.float32)
    net = Stream().eval()
    args = (torch.from_numpy(chunk[:1]), torch.from_numpy(sr), torch.from_numpy(state))
    _torch_export(net, args, path, ["chunk", "sr", "state"], ["speech_prob", "state_out"], None)
    return Built({"chunk": chunk, "sr": sr, "state": state}, "torch.onnx (GRU)",
                 shared=("sr", "state"))


# ---------------------------------------------------------------------------------- registry
MODELS: dict[str, Callable[[Path], Built]] = {
    f.__name__: f for f in (
        resnet18, resnet50, mobilenet_v2, mobilenet_v3_small, efficientnet_b0, shufflenet_v2,
        squeezenet, densenet121, inception_v3, convnext_tiny, regnet_y_400mf, vit_tiny,
        lraspp_dynamic_hw,
        bert, bert_ort_optimized, distilbert, gpt2,
        sklearn_mlp_zipmap, sklearn_mlp, sklearn_logreg_zipmap, sklearn_logreg,
        keras_mlp, keras_cnn,
        resnet18_opset9, mobilenet_v2_opset9, squeezenet_opset9,
        paddle_mobilenet_v3, paddle_constant_weights,
        torch_cond, onnx_loop, streaming_vad,
    )
}

# A fast subset covering the main exporters: seconds per model.
QUICK = ("squeezenet", "sklearn_mlp_zipmap", "keras_cnn", "paddle_mobilenet_v3",
         "streaming_vad", "distilbert")


def build(name: str, corpus: Path, rebuild: bool = False,
          registry: dict[str, Callable[[Path], Built]] | None = None) -> Entry:
    """The cached entry ``name`` in ``corpus``, building it first if missing (or ``rebuild``);
    ``registry`` is where the builder is looked up (default :data:`MODELS`)."""
    corpus.mkdir(parents=True, exist_ok=True)
    model, data, meta = (corpus / f"{name}.{ext}" for ext in ("onnx", "npz", "json"))
    if rebuild or not (model.exists() and data.exists() and meta.exists()):
        for stale in corpus.glob(f"{name}.onnx*"):
            stale.unlink()
        built = (MODELS if registry is None else registry)[name](model)
        np.savez(data, **built.data)
        info = asdict(built)
        del info["data"]
        meta.write_text(json.dumps(info, indent=1))
    info = json.loads(meta.read_text())
    return Entry(name, model, data, info["source"], tuple(info["shared"]), info["note"])
