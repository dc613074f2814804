"""Digits classifiers trained and exported to ONNX the way users do it, for the recovery benchmark.

pyprune's recovery (BatchNorm re-estimation, bias compensation) was first measured on a CNN
exported with its BatchNormalization nodes kept. Real exports do not keep them: ``torch.onnx.export``
in eval mode folds BatchNorm into the preceding Conv, and scikit-learn and Keras MLPs never had
any. This module builds such exports, small enough to train and export in about a minute or
less each on two cores (1-35 s on a lightly loaded machine here, up to ~75 s with other jobs
running):

========================  ============================================================  ========
name                      what it is                                                    target
========================  ============================================================  ========
``torch_cnn``             three Conv-BN-ReLU blocks (32, 32, 64) and two Linear layers,  MACs
                          8x8 input, TorchScript exporter (``dynamo=False``)
``torch_rescnn``          four Conv-BN convolutions (24, 48, 48, 48), the last two a     MACs
                          residual block, max-pool, global average pooling, one Linear;
                          16x16 input (the 8x8 digits upsampled), torch's default
                          exporter (``dynamo=True``)
``sklearn_mlp``           ``MLPClassifier(hidden_layer_sizes=(32,))`` converted by       params
                          skl2onnx without ZipMap (MatMul+Add+Relu, Softmax, ArgMax and
                          an ``ai.onnx.ml`` label lookup; outputs: int64 label first,
                          probabilities second)
``keras_mlp``             Keras 3 ``Dense`` 64 -> 32 -> 10 with softmax,                 params
                          ``model.export(..., format="onnx")``
``keras_cnn``             Keras 3 NHWC CNN (three ``Conv2D`` 16, 32, 32, two max-pools,  MACs
                          ``Flatten``, ``Dense`` 64 and 10), ``model.export(...,
                          format="onnx")``
========================  ============================================================  ========

The two torch exports contain no BatchNormalization node (checked when they are built). The Keras
models are exported with Keras's own ONNX export on its torch backend (``KERAS_BACKEND=torch``;
Keras hands the model to ``torch.onnx.export``): channels-last layers become ONNX Conv/MaxPool
wrapped in Transposes, biases are Adds in NHWC, there are float-to-float Casts between layers, and
the Flatten is a Reshape whose shape is computed from ``Shape`` at run time. The TensorFlow
backend (tf2onnx) would produce a different NHWC graph; it is not installed here.

Data: scikit-learn's bundled 8x8 digits (1797 images, no download), pixels scaled to [0, 1]. For
each ``seed`` one permutation gives a held-out test split (360 images) and the training set (the
other 1437); the calibration set is 300 images *taken from the training set*, as users calibrate
with data they have, on which a trained model is close to 100 %. Constraints judged on it say
little about unseen data, which is why the benchmark scores every model on the test split.

``seed`` selects a member of the family: it changes the split order, the initial weights and the
training order, so a pruning method tuned on ``seed=0`` can be checked on exports it never saw.
Everything is seeded and trained on one thread, so the same seed gives the same files.

Usage::

    from _recovery_models import build_all
    models = build_all()                      # cached in benchmarks/models/recovery/seed0/
    path, calib, x_test, y_test = models["torch_cnn"]

or ``python benchmarks/_recovery_models.py [--seed N] [--rebuild]`` to build and print test
accuracies. Needs torch, scikit-learn, skl2onnx, keras (3.x), onnx and onnxruntime; pyprune does
not.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx

__all__ = [
    "CACHE", "MODELS", "Exported", "ModelSpec", "Split", "build", "build_all", "digits_split",
    "load_torch_model", "metadata", "onnx_accuracy", "torch_model",
]

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "models" / "recovery"
N_TEST = 360
N_CALIB = 300
#: Bumped whenever a recipe changes, so that stale cached files are rebuilt.
RECIPE_VERSION = 1


class Exported(NamedTuple):
    """What a builder returns: the ONNX file, the calibration ``.npz`` (inputs keyed by the
    model's input name, labels under ``"y"``) and the held-out test split, shaped for the model."""

    path: Path
    calib: Path
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Split:
    """One seeded split of the digits; images flattened to 64 float32 pixels in [0, 1]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_calib: np.ndarray
    y_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split(seed: int = 0) -> Split:
    """Test = the first 360 images of a seeded permutation, train = the rest, calibration = the
    first 300 training images (calibration data is training data, as it usually is in practice)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:N_TEST], order[N_TEST:]
    calib = train[:N_CALIB]
    return Split(x[train], y[train], x[calib], y[calib], x[test], y[test])


# ------------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Train on one thread: the same seed then gives bit-identical weights on every run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Exporters print progress and warn about tracing details that do not apply to these fixed
    architectures (and torch about the TorchScript exporter's deprecation); keep the output to
    the results."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _save(proto: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(proto, tmp)
    tmp.replace(path)


def _input_name(path: Path) -> str:
    model = onnx.load(path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    if len(names) != 1:
        raise RuntimeError(f"{path.name}: expected one input, found {names}")
    return names[0]


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray, output: int = 0) -> float:
    """Top-1 accuracy of the ONNX model on ``x`` in ONNX Runtime, reading output ``output``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    scores = session.run(None, {session.get_inputs()[0].name: x})[output]
    return float(np.mean(np.argmax(scores, axis=1) == y))


# -------------------------------------------------------------------------------------- torch
def _torch_modules():  # torch is imported lazily: the MLP builders do not need it
    import torch
    from torch import nn

    def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    class DigitsCNN(nn.Module):
        """Three Conv-BN-ReLU blocks (32, 32, 64 channels), two max-pools, a 64-unit dense layer
        and the classifier: the shape of ``benchmarks/models/digits_cnn.onnx``."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *conv_bn_relu(1, 32), *conv_bn_relu(32, 32), nn.MaxPool2d(2),  # 8x8 -> 4x4
                *conv_bn_relu(32, 64), nn.MaxPool2d(2),  # -> 2x2
            )
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    class DigitsResCNN(nn.Module):
        """A stem, a strided convolution and one residual block, all Conv-BN-ReLU, on 16x16
        images; global average pooling and one linear classifier. The residual join couples the
        strided convolution's channels with the block's second convolution."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(*conv_bn_relu(1, 24))  # 16x16
            self.down = nn.Sequential(*conv_bn_relu(24, 48, stride=2))  # -> 8x8
            self.conv1 = nn.Sequential(*conv_bn_relu(48, 48))
            self.conv2 = nn.Sequential(nn.Conv2d(48, 48, 3, 1, 1, bias=False), nn.BatchNorm2d(48))
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)  # -> 4x4
            self.fc = nn.Linear(48, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.down(self.stem(x))
            x = self.relu(x + self.conv2(self.conv1(x)))
            return self.fc(self.pool(x).mean(dim=(2, 3)))

    return DigitsCNN, DigitsResCNN


def _upsample16(x: np.ndarray) -> np.ndarray:
    """Flattened 8x8 images -> [N, 1, 16, 16], bilinear (a preprocessing step, outside the model)."""
    import torch

    images = torch.from_numpy(x.reshape(-1, 1, 8, 8))
    return torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear",
                                           align_corners=False).numpy()


def _shifted(x, gen):
    """Each image moved by up to one pixel in each direction, zeros shifted in (the
    augmentation ``examples/make_digits_models.py`` trains its CNN with)."""
    import torch

    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (b,), generator=gen)
    dx = torch.randint(0, 3, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :]
    return padded[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)


def _train_torch(model, x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int, lr: float):
    """AdamW with a one-cycle schedule, label smoothing 0.1, half of each batch shifted by a
    pixel; batches of 64. Returns the model in eval mode."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    steps = epochs * ((len(xs) + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xs), generator=gen)
        for start in range(0, len(xs), 64):
            idx = perm[start : start + 64]
            batch = xs[idx]
            moved = torch.rand(len(idx), generator=gen) < 0.5
            batch = torch.where(moved[:, None, None, None], _shifted(batch, gen), batch)
            loss = loss_fn(model(batch), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _export_torch(model, example: np.ndarray, path: Path, *, dynamo: bool) -> None:
    """Export in eval mode with a symbolic batch, as users do. ``dynamo=False`` is the TorchScript
    exporter most shipped models came from; ``dynamo=True`` is torch's default exporter today.
    Both fold each BatchNorm into its Conv; a model that still has one is not what this
    benchmark is about, so that is an error."""
    import torch

    x = torch.from_numpy(example)
    with torch.no_grad(), _quiet_export():
        if dynamo:
            program = torch.onnx.export(model, (x,), input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        opset_version=18, dynamo=True)
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(model, (x,), buffer, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
            proto = onnx.load_from_string(buffer.getvalue())
    kept = [n.name for n in proto.graph.node if n.op_type == "BatchNormalization"]
    if kept:
        raise RuntimeError(f"{path.name}: the export kept BatchNormalization nodes {kept}")
    _save(proto, path)


def _torch_builder(kind: str) -> Callable[[Path, int], dict]:
    def build_one(out: Path, seed: int) -> dict:
        import torch

        split = digits_split(seed)
        if kind == "torch_cnn":
            shape = lambda x: x.reshape(-1, 1, 8, 8)  # noqa: E731
            epochs, lr, dynamo = 80, 3e-3, False
        else:
            shape, epochs, lr, dynamo = _upsample16, 60, 3e-3, True
        x_train, x_calib, x_test = shape(split.x_train), shape(split.x_calib), shape(split.x_test)
        with _one_thread():
            torch.manual_seed(seed)  # initial weights
            model = torch_model(kind)
            _train_torch(model, x_train, split.y_train, seed=seed, epochs=epochs, lr=lr)
            torch.save(model.state_dict(), out / f"{kind}.pt")
            _export_torch(model, x_calib[:1], out / f"{kind}.onnx", dynamo=dynamo)
            with torch.no_grad():
                framework = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == split.y_test).mean())
        return {"input": "input", "x_calib": x_calib, "y_calib": split.y_calib, "x_test": x_test,
                "y_test": split.y_test, "framework_test_accuracy": framework,
                "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo={dynamo})"}

    return build_one


def torch_model(kind: str):
    """A fresh (untrained) torch module of ``torch_cnn`` or ``torch_rescnn``."""
    DigitsCNN, DigitsResCNN = _torch_modules()
    return {"torch_cnn": DigitsCNN, "torch_rescnn": DigitsResCNN}[kind]()


def load_torch_model(name: str, cache_dir: Path = CACHE, seed: int = 0):
    """The trained torch module behind a cached torch export, in eval mode (builds it if needed)."""
    import torch

    build(name, cache_dir, seed)
    model = torch_model(name)
    model.load_state_dict(torch.load(_folder(cache_dir, seed) / f"{name}.pt", weights_only=True))
    return model.eval()


# ------------------------------------------------------------------------------------ sklearn
def _build_sklearn_mlp(out: Path, seed: int) -> dict:
    import skl2onnx
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    split = digits_split(seed)
    # Adam stops when the loss settles (about 450 iterations here); 1000 is headroom, not a budget.
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=1000, random_state=seed)
    clf.fit(split.x_train, split.y_train)
    # zipmap=False: probabilities as a plain [N, 10] tensor (the default is a sequence of maps).
    proto = to_onnx(clf, split.x_train[:1], options={"zipmap": False}, target_opset=17)
    _save(proto, out / "sklearn_mlp.onnx")
    return {"input": "X", "x_calib": split.x_calib, "y_calib": split.y_calib, "x_test": split.x_test,
            "y_test": split.y_test, "framework_test_accuracy": float(clf.score(split.x_test, split.y_test)),
            "exporter": f"skl2onnx {skl2onnx.__version__} to_onnx(zipmap=False)"}


# -------------------------------------------------------------------------------------- keras
def _keras():
    """Keras 3 on its torch backend (the backend must be chosen before keras is imported)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"keras was imported with the {keras.backend.backend()!r} backend; these "
                           "exports are made with KERAS_BACKEND=torch")
    return keras


def _keras_builder(kind: str) -> Callable[[Path, int], dict]:
    def build_one(out: Path, seed: int) -> dict:
        keras = _keras()
        layers = keras.layers
        split = digits_split(seed)

        def layer_stack() -> list:
            # Called after the seed is set: Keras draws each initializer's seed when the layer
            # is constructed, so layers built earlier would depend on what ran before.
            if kind == "keras_mlp":
                return [keras.Input((64,)), layers.Dense(32, activation="relu"),
                        layers.Dense(10, activation="softmax")]
            return [keras.Input((8, 8, 1)),
                    layers.Conv2D(16, 3, padding="same", activation="relu"),
                    layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                    layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                    layers.Flatten(), layers.Dense(64, activation="relu"),
                    layers.Dense(10, activation="softmax")]

        if kind == "keras_mlp":
            shape, epochs = (lambda x: x), 100
        else:
            shape, epochs = (lambda x: x.reshape(-1, 8, 8, 1)), 40  # channels last, Keras's default
        x_train, x_calib, x_test = shape(split.x_train), shape(split.x_calib), shape(split.x_test)
        with _one_thread():
            keras.utils.set_random_seed(seed)  # python, numpy and torch generators
            model = keras.Sequential(layer_stack())
            model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            model.fit(x_train, split.y_train, batch_size=64, epochs=epochs, verbose=0)
            framework = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == split.y_test))
            with _quiet_export():
                model.export(str(out / f"{kind}.onnx"), format="onnx", verbose=False)
        path = out / f"{kind}.onnx"
        _save(onnx.load(path), path)  # full check, as for the others
        return {"input": _input_name(path), "x_calib": x_calib, "y_calib": split.y_calib, "x_test": x_test,
                "y_test": split.y_test, "framework_test_accuracy": framework,
                "exporter": f"keras {keras.__version__} (torch backend) model.export(format='onnx')"}

    return build_one


# ----------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ModelSpec:
    """How a model is built and judged: ``output`` is the index of the scores output (the
    skl2onnx label output comes first, its probabilities second); ``target`` is the complexity
    figure pruned toward (MACs for CNNs, params for MLPs, whose MACs equal their weights)."""

    builder: Callable[[Path, int], dict]
    target: str
    output: int = 0
    torch: bool = False


MODELS: dict[str, ModelSpec] = {
    "torch_cnn": ModelSpec(_torch_builder("torch_cnn"), "macs", torch=True),
    "torch_rescnn": ModelSpec(_torch_builder("torch_rescnn"), "macs", torch=True),
    "sklearn_mlp": ModelSpec(_build_sklearn_mlp, "params", output=1),
    "keras_mlp": ModelSpec(_keras_builder("keras_mlp"), "params"),
    "keras_cnn": ModelSpec(_keras_builder("keras_cnn"), "macs"),
}


def _folder(cache_dir: Path, seed: int) -> Path:
    return Path(cache_dir) / f"seed{seed}"


def build(name: str, cache_dir: Path = CACHE, seed: int = 0, *, rebuild: bool = False) -> Exported:
    """Build (or take from the cache) one model of the family ``seed``.

    Files in ``cache_dir/seed{seed}/``: ``NAME.onnx``, ``NAME.calib.npz``, ``NAME.test.npz`` and
    ``NAME.json`` (recipe version, exporter, training time, test accuracies in the framework and in
    ONNX Runtime); torch models also keep their ``NAME.pt`` state dict for Torch-Pruning.
    """
    spec = MODELS[name]
    out = _folder(cache_dir, seed)
    path, calib, test, meta = (out / f"{name}{ext}" for ext in (".onnx", ".calib.npz", ".test.npz", ".json"))
    fresh = all(p.exists() for p in (path, calib, test, meta))
    if fresh and not rebuild and json.loads(meta.read_text()).get("recipe") == RECIPE_VERSION:
        with np.load(test) as npz:
            return Exported(path, calib, npz["x"], npz["y"])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    built = spec.builder(out, seed)
    seconds = time.perf_counter() - start
    np.savez(calib, **{built["input"]: built["x_calib"], "y": built["y_calib"]})
    np.savez(test, x=built["x_test"], y=built["y_test"])
    info = {
        "recipe": RECIPE_VERSION, "seed": seed, "input": built["input"], "exporter": built["exporter"],
        "build_seconds": round(seconds, 1),
        "framework_test_accuracy": built["framework_test_accuracy"],
        "onnx_test_accuracy": onnx_accuracy(path, built["x_test"], built["y_test"], spec.output),
        "onnx_calib_accuracy": onnx_accuracy(path, built["x_calib"], built["y_calib"], spec.output),
    }
    meta.write_text(json.dumps(info, indent=2) + "\n")
    return Exported(path, calib, built["x_test"], built["y_test"])


def build_all(cache_dir: Path = CACHE, seed: int = 0, *, names: list[str] | None = None,
              rebuild: bool = False) -> dict[str, Exported]:
    """Every model of the family ``seed`` (or those in ``names``), built once and cached."""
    return {name: build(name, cache_dir, seed, rebuild=rebuild) for name in (names or MODELS)}


def metadata(name: str, cache_dir: Path = CACHE, seed: int = 0) -> dict:
    """The ``NAME.json`` written when the model was built."""
    return json.loads((_folder(cache_dir, seed) / f"{name}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="family member (split order, initialisation)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="cache folder")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    args = parser.parse_args()
    for name, exported in build_all(args.cache, args.seed, names=args.models, rebuild=args.rebuild).items():
        info = metadata(name, args.cache, args.seed)
        print(f"{name:13s} test accuracy {info['onnx_test_accuracy']:.4f} (ONNX Runtime), "
              f"{info['framework_test_accuracy']:.4f} (framework), calibration "
              f"{info['onnx_calib_accuracy']:.4f}; built in {info['build_seconds']} s; {exported.path}")


if __name__ == "__main__":
    main()
