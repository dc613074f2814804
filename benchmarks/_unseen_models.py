"""Exports the corpus does not hold, to check that what the corpus shows holds beyond it.

Other architectures, exporter settings, opsets and seeds than ``_corpus_models.py`` uses, built the
same way (one function per model; ``UNSEEN`` maps names to them) and run by ``bench_corpus.py
--unseen``. Nothing here was used while writing the code it checks: the list was fixed before the
first run and is reported whole, failures included.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
from _corpus_models import (
    TV,
    Built,
    _digits,
    _keras,
    _keras_export,
    _opset9,
    _paddle_export,
    _quiet,
    _skl,
    _text_export,
    _timm,
    _tokens,
    _torch_export,
    _tv,
    _vision,
    images,
)

__all__ = ["UNSEEN"]


def mnasnet(path: Path) -> Built:
    return _vision("u_mnasnet", path, _tv("mnasnet0_5"), 96, TV)


def googlenet(path: Path) -> Built:
    net = _tv("googlenet", aux_logits=False, init_weights=True)
    return _vision("u_googlenet", path, net, 96, TV)


def resnext(path: Path) -> Built:
    """Grouped 3x3 convolutions (32 groups), TorchScript exporter at opset 12."""
    return _vision("u_resnext", path, _tv("resnext50_32x4d"), 64, TV + " (TorchScript)", exporter="torchscript",
                   opset=12)


def mobilenet_v3_large(path: Path) -> Built:
    return _vision("u_mnv3l", path, _tv("mobilenet_v3_large"), 96, TV + " (TorchScript)", exporter="torchscript",
                   opset=14)


def regnet_x(path: Path) -> Built:
    return _vision("u_regnetx", path, _tv("regnet_x_400mf"), 96, TV)


def ghostnet(path: Path) -> Built:
    return _vision("u_ghostnet", path, _timm("ghostnet_100"), 96, "timm/torch.onnx")


def mixnet(path: Path) -> Built:
    """Mixed kernel sizes: channels split into groups with different kernels, then concatenated."""
    return _vision("u_mixnet", path, _timm("mixnet_s"), 96, "timm/torch.onnx")


def deit_tiny(path: Path) -> Built:
    return _vision("u_deit", path, _timm("deit_tiny_patch16_224", img_size=64), 64, "timm/torch.onnx",
                   calibrate=False)


def mnasnet_opset9(path: Path) -> Built:
    """MnasNet 0.75, TorchScript at opset 9 (the model-zoo era). (VGG was the first choice; its
    adaptive pooling at 96x96 cannot be exported at opset 9.)"""
    return _opset9("u_mnasnet9", path, "mnasnet0_75", 9)


def deeplab_dynamic(path: Path) -> Built:
    """Segmentation with symbolic batch, height and width (DeepLabV3, MobileNetV3 backbone)."""
    import torch
    import torchvision
    from _corpus_models import _calibrate_batchnorm

    torch.manual_seed(1)
    net = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                      num_classes=5, aux_loss=False)
    x = images("u_deeplab", 8, 3, 96, 128)
    _calibrate_batchnorm(net, x)

    class Out(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            return self.inner(image)["out"]

    axes = {0: "batch", 2: "height", 3: "width"}
    _torch_export(Out(net), (torch.from_numpy(x[:1]),), path, ["image"], ["out"], {"image": axes, "out": axes})
    return Built({"image": x}, TV, note="symbolic batch, height and width")


def roberta(path: Path) -> Built:
    import torch
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(1)
    cfg = RobertaConfig(vocab_size=8000, hidden_size=192, num_hidden_layers=3, num_attention_heads=3,
                        intermediate_size=768, max_position_embeddings=130)
    data = _tokens("u_roberta", 8000, 0, 2)
    _text_export(path, RobertaModel(cfg).eval(), ("last_hidden_state",), data)
    return Built(data, "transformers/torch.onnx")


def albert(path: Path) -> Built:
    """ALBERT shares one layer's weights across every layer."""
    import torch
    from transformers import AlbertConfig, AlbertModel

    torch.manual_seed(1)
    cfg = AlbertConfig(vocab_size=8000, embedding_size=64, hidden_size=192, num_hidden_layers=4,
                       num_attention_heads=3, intermediate_size=768)
    data = _tokens("u_albert", 8000, 2, 3)
    _text_export(path, AlbertModel(cfg).eval(), ("last_hidden_state",), data)
    return Built(data, "transformers/torch.onnx")


def distilbert_ort(path: Path) -> Built:
    """DistilBERT through ONNX Runtime's transformer optimizer (TorchScript export, eager attention)."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(1)
    cfg = DistilBertConfig(vocab_size=8000, dim=192, n_layers=3, n_heads=3, hidden_dim=768,
                           attn_implementation="eager")
    data = _tokens("u_distilbert_ort", 8000, 101, 102)
    raw = path.with_name(path.stem + ".raw.onnx")
    _text_export(raw, DistilBertModel(cfg).eval(), ("last_hidden_state",), data, exporter="torchscript", opset=17)
    with _quiet():
        opt = optimize_model(str(raw), model_type="bert", num_heads=3, hidden_size=192)
    opt.save_model_to_file(str(path))
    raw.unlink()
    fused = sorted({n.op_type for n in opt.model.graph.node if n.domain == "com.microsoft"})
    return Built(data, "transformers/torch.onnx + ORT optimizer", note="com.microsoft: " + ", ".join(fused))


def sklearn_mlp_tanh(path: Path) -> Built:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(48,), activation="tanh", max_iter=200, random_state=1)
    return _skl("u_skl_tanh", path, clf, zipmap=True)


def sklearn_pipeline(path: Path) -> Built:
    """StandardScaler then MLPClassifier in one pipeline (skl2onnx writes a Scaler op first)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32, 32), max_iter=200, random_state=2))
    return _skl("u_skl_pipe", path, pipe, zipmap=False)


def keras_bn_cnn(path: Path) -> Built:
    """Keras 3 functional CNN with BatchNormalization, DepthwiseConv2D and a residual Add."""
    keras = _keras()
    xtr, xte, ytr, _ = _digits()
    xtr, xte = xtr.reshape(-1, 8, 8, 1), xte.reshape(-1, 8, 8, 1)
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(32, 3, padding="same")(inp)
    h = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(h))
    d = keras.layers.DepthwiseConv2D(3, padding="same")(h)
    d = keras.layers.Conv2D(32, 1)(keras.layers.Activation("relu")(keras.layers.BatchNormalization()(d)))
    h = keras.layers.Add()([h, d])
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Dense(48, activation="relu")(h))
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=3, batch_size=64, verbose=0)
    _keras_export(model, path, xte)
    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    return Built({name: xte[:64]}, f"Keras {keras.__version__} (torch backend), BN + depthwise")


def paddle_opset13(path: Path) -> Built:
    """The paddle2onnx MobileNetV3 export at opset 13 with weights moved into Constant nodes."""
    import paddle2onnx
    from onnx import helper

    x = _paddle_export(path)
    model = onnx.load(str(path))
    g = model.graph
    consts = [helper.make_node("Constant", [], [t.name], value=t, name=f"p2o.Constant.{i}")
              for i, t in enumerate(g.initializer)]
    del g.initializer[:]
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    from onnx import version_converter

    model = version_converter.convert_version(model, 13)
    onnx.save(model, str(path))
    return Built({"image": x}, f"paddle2onnx {paddle2onnx.__version__} + version_converter 13, Constant weights")


UNSEEN: dict[str, Callable[[Path], Built]] = {
    f.__name__: f for f in (
        mnasnet, googlenet, resnext, mobilenet_v3_large, regnet_x, ghostnet, mixnet, deit_tiny, mnasnet_opset9,
        deeplab_dynamic, roberta, albert, distilbert_ort, sklearn_mlp_tanh, sklearn_pipeline, keras_bn_cnn,
        paddle_opset13,
    )
}
