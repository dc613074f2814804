"""Exports the corpus does not hold, to check that what the corpus shows holds beyond it.

Other architectures, exporter settings, opsets and seeds than ``_corpus_models.py`` uses, built the
same way (one function per model; ``UNSEEN`` maps names to them) and run by ``bench_corpus.py
--unseen``. Nothing here was used while writing the code it checks: the list was fixed before the
first run and is reported whole, failures included.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
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


# -- second batch: fixed after the first batch's run had found two bugs (skl2onnx's Scaler
# hid every shape after it; Keras reshaped biases by a run-time channel count), to check again
# on exports nothing was fixed against.


def shufflenet_half(path: Path) -> Built:
    return _vision("u_shufflenet05", path, _tv("shufflenet_v2_x0_5"), 96, TV + " (TorchScript)",
                   exporter="torchscript", opset=11)


def efficientnet_b1_tv(path: Path) -> Built:
    return _vision("u_effb1", path, _tv("efficientnet_b1"), 96, TV)


def resnet34_dynamic_hw(path: Path) -> Built:
    """ResNet-34 with symbolic batch, height and width (a backbone exported for any image size)."""
    import torch
    from _corpus_models import _calibrate_batchnorm

    torch.manual_seed(3)
    net = _tv("resnet34")
    x = images("u_r34", 16, 3, 96, 128)
    _calibrate_batchnorm(net, x)
    axes = {0: "batch", 2: "height", 3: "width"}
    _torch_export(net.eval(), (torch.from_numpy(x[:1]),), path, ["input"], ["logits"],
                  {"input": axes, "logits": {0: "batch"}})
    return Built({"input": x}, TV, note="symbolic batch, height and width")


def rexnet(path: Path) -> Built:
    return _vision("u_rexnet", path, _timm("rexnet_100"), 96, "timm/torch.onnx")


def tf_mobilenetv3(path: Path) -> Built:
    """timm's port of TensorFlow's MobileNetV3 ('same' padding written as explicit Pad ops)."""
    return _vision("u_tfmnv3", path, _timm("tf_mobilenetv3_small_100"), 96, "timm/torch.onnx")


def mobilevit(path: Path) -> Built:
    return _vision("u_mobilevit", path, _timm("mobilevit_xxs"), 64, "timm/torch.onnx")


def bert_token_types(path: Path) -> Built:
    """BERT with three inputs (ids, mask, token type ids), the TorchScript exporter at opset 14."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=6000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=512)
    model = BertModel(cfg).eval()
    data = _tokens("u_bert_tt", 6000, 101, 102)
    data["token_type_ids"] = np.zeros_like(data["input_ids"])

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    axes = {0: "batch", 1: "sequence"}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = tuple(torch.from_numpy(data[n][:2]) for n in names)
    _torch_export(Wrapped().eval(), args, path, names, ["last_hidden_state"],
                  {**{n: axes for n in names}, "last_hidden_state": axes}, exporter="torchscript", opset=14)
    return Built(data, "transformers/torch.onnx (TorchScript)")


def gpt2_ort(path: Path) -> Built:
    """A GPT-2-style decoder through ONNX Runtime's transformer optimizer (model_type gpt2)."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(3)
    cfg = GPT2Config(vocab_size=5000, n_positions=64, n_embd=128, n_layer=2, n_head=2,
                     attn_implementation="eager")
    data = _tokens("u_gpt2_ort", 5000, None, None)
    raw = path.with_name(path.stem + ".raw.onnx")
    _text_export(raw, GPT2Model(cfg).eval(), ("last_hidden_state",), data, exporter="torchscript", opset=17)
    with _quiet():
        opt = optimize_model(str(raw), model_type="gpt2", num_heads=2, hidden_size=128)
    opt.save_model_to_file(str(path))
    raw.unlink()
    fused = sorted({n.op_type for n in opt.model.graph.node if n.domain == "com.microsoft"})
    return Built(data, "transformers/torch.onnx + ORT optimizer", note="com.microsoft: " + ", ".join(fused))


def sklearn_regressor(path: Path) -> Built:
    """MLPRegressor: one float output per sample, no classes."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPRegressor

    xtr, xte, ytr, _ = _digits()
    reg = MLPRegressor(hidden_layer_sizes=(40, 20), max_iter=200, random_state=3)
    with _quiet():
        reg.fit(xtr, ytr.astype(np.float32))
    onx = convert_sklearn(reg, initial_types=[("X", FloatTensorType([None, 64]))])
    onnx.save(onx, str(path))
    return Built({"X": xte[:64]}, "scikit-learn/skl2onnx (regressor)")


def keras_conv1d(path: Path) -> Built:
    """Keras 3 Conv1D text-style model over 8 steps of 8 features."""
    keras = _keras()
    xtr, xte, ytr, _ = _digits()
    xtr, xte = xtr.reshape(-1, 8, 8), xte.reshape(-1, 8, 8)
    model = keras.Sequential([
        keras.Input((8, 8), name="steps"),
        keras.layers.Conv1D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv1D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=3, batch_size=64, verbose=0)
    _keras_export(model, path, xte)
    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    return Built({name: xte[:64]}, f"Keras {keras.__version__} (torch backend), Conv1D")


# -- third batch: control flow (written after If/Loop/Scan bodies became prunable) -----------------
def torchscript_loop(path: Path) -> Built:
    """A scripted MLP refining its state ``h = h + tanh(step(h))`` for a run-time number of steps (an
    int64 input): TorchScript writes a Loop whose body reads the step's weights from the main graph."""
    import torch
    from torch import nn

    class Refine(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.step, self.out = nn.Linear(64, 96), nn.Linear(96, 96), nn.Linear(96, 10)

        def forward(self, x, n: torch.Tensor):
            h = torch.relu(self.inp(x))
            for _ in range(int(n)):
                h = h + torch.tanh(self.step(h))
            return self.out(h)

    torch.manual_seed(1)
    _, xte, _, _ = _digits()
    net = torch.jit.script(Refine().eval())
    n = np.array(4, np.int64)
    _torch_export(net, (torch.from_numpy(xte[:1]), torch.from_numpy(n)), path, ["x", "steps"], ["logits"],
                  {"x": {0: "batch"}, "logits": {0: "batch"}}, exporter="torchscript", opset=17)
    return Built({"x": xte[:64], "steps": n}, "torch.jit.script/torch.onnx (Loop)", shared=("steps",))


def torchscript_if(path: Path) -> Built:
    """A scripted CNN with a data-dependent ``if`` between a 3x3 and a 5x5 convolution block:
    TorchScript writes an If whose branches read their weights from the main graph."""
    import torch
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 24, 3, 2, 1)
            self.small = nn.Sequential(nn.Conv2d(24, 48, 3, 1, 1), nn.ReLU(), nn.Conv2d(48, 32, 3, 1, 1))
            self.large = nn.Sequential(nn.Conv2d(24, 32, 5, 1, 2))
            self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(64, 10))

        def forward(self, x):
            h = torch.relu(self.stem(x))
            if bool(x.mean() > -100.0):
                h = self.small(h)
            else:
                h = self.large(h)
            return self.head(h)

    torch.manual_seed(2)
    x = images("u_torchscript_if", 32, 3, 48, 48)
    net = torch.jit.script(Branchy().eval())
    _torch_export(net, (torch.from_numpy(x[:1]),), path, ["input"], ["logits"],
                  {"input": {0: "batch"}, "logits": {0: "batch"}}, exporter="torchscript", opset=16)
    return Built({"input": x}, "torch.jit.script/torch.onnx (If)")


def cond_residual(path: Path) -> Built:
    """torch.cond choosing between two residual refinements of a feature map (dynamo exporter,
    opset 18): the branches add their convolutions to the input they read from the main graph."""
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 48, 3, 2, 1), nn.ReLU())
            self.a = nn.Sequential(nn.Conv2d(48, 96, 1), nn.ReLU(), nn.Conv2d(96, 48, 1))
            self.b = nn.Sequential(nn.Conv2d(48, 48, 3, 1, 1, groups=48), nn.ReLU(), nn.Conv2d(48, 48, 1))
            self.head = nn.Sequential(nn.Conv2d(48, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(64, 10))

        def forward(self, x):
            h = self.stem(x)
            h = torch.cond(x.mean() > -100.0, lambda t: t + self.a(t), lambda t: t + self.b(t), (h,))
            return self.head(h)

    torch.manual_seed(3)
    x = images("u_cond_residual", 32, 3, 48, 48)
    net = Residual().eval()
    _torch_export(net, (torch.from_numpy(x[:1]),), path, ["input"], ["logits"],
                  {"input": {0: "batch"}, "logits": {0: "batch"}}, opset=18)
    return Built({"input": x}, "torch.cond/torch.onnx (If, residual)")


UNSEEN: dict[str, Callable[[Path], Built]] = {
    f.__name__: f for f in (
        mnasnet, googlenet, resnext, mobilenet_v3_large, regnet_x, ghostnet, mixnet, deit_tiny, mnasnet_opset9,
        deeplab_dynamic, roberta, albert, distilbert_ort, sklearn_mlp_tanh, sklearn_pipeline, keras_bn_cnn,
        paddle_opset13,
        # second batch
        shufflenet_half, efficientnet_b1_tv, resnet34_dynamic_hw, rexnet, tf_mobilenetv3, mobilevit,
        bert_token_types, gpt2_ort, sklearn_regressor, keras_conv1d,
        # third batch
        torchscript_loop, torchscript_if, cond_residual,
    )
}
