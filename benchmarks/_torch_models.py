"""ResNet-18 and MobileNetV2 as torchvision defines them, in plain torch, exported to ONNX.

torchvision is not needed: the two architectures are written out here layer for layer (same
module structure, widths, strides and initialisation as ``torchvision.models.resnet18`` and
``torchvision.models.mobilenet_v2``), so the exported graphs are the ones users get from
torchvision. Weights are random (seeded); BatchNorm statistics are randomised too, so that the
folded-or-not BatchNorm nodes are not identities.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = ["resnet18", "mobilenet_v2", "build", "export_onnx", "onnx_scope", "MODELS", "CLASSIFIERS"]


# --------------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers: list[int], num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> nn.Module:
    """torchvision's ``resnet18`` architecture (BasicBlock, [2, 2, 2, 2])."""
    return ResNet([2, 2, 2, 2], num_classes)


# ---------------------------------------------------------------------------------- MobileNetV2
def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNReLU(nn.Sequential):
    def __init__(self, inp: int, oup: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                    [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
        input_channel = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(3, input_channel, stride=2)]
        for t, c, n, s in settings:
            output_channel = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    """torchvision's ``mobilenet_v2`` architecture (width 1.0)."""
    return MobileNetV2(num_classes)


MODELS: dict[str, Callable[..., nn.Module]] = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}
#: each model's classifier output layer (its outputs are the logits: never pruned)
CLASSIFIERS = {"resnet18": "fc", "mobilenet_v2": "classifier.1"}


def _randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics, as a trained network has."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=generator)
            m.bias.data = 0.1 * torch.randn(c, generator=generator)
            m.running_mean.data = 0.1 * torch.randn(c, generator=generator)
            m.running_var.data = 0.5 + torch.rand(c, generator=generator)


def build(name: str, seed: int = 0) -> nn.Module:
    """``name`` with seeded random weights and BatchNorm statistics, in eval mode.

    The same ``seed`` gives the same module every time (the ONNX file one pruner works on and the
    torch module another prunes hold the same weights).
    """
    torch.manual_seed(seed)
    model = MODELS[name]()
    _randomise_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def export_onnx(model: nn.Module, path: str | Path | None = None, *, opset: int = 17) -> bytes:
    """Export ``model`` (in eval mode) for a 1x3x224x224 input named "input".

    Returns the serialised model; also writes it to ``path`` when given. The TorchScript-based
    exporter is used (``dynamo=False``): it produces the same Conv/BatchNorm-folded graphs users
    have been shipping for years. Its node names carry the module path ("/layer1/layer1.0/conv1/Conv"
    for ``layer1.0.conv1``), which :func:`onnx_scope` reproduces.
    """
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (x,), buf, opset_version=opset, input_names=["input"],
                          output_names=["logits"], dynamo=False, do_constant_folding=True)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def onnx_scope(module_name: str) -> str:
    """The node-name prefix the TorchScript exporter gives the ops of module ``module_name``.

    Each level of the module path is one "/" scope, named by the attribute (``conv1``); children
    of a Sequential are named by index, which the exporter writes prefixed with the parent's own
    scope name (``layer1`` -> ``layer1.0``, ``conv.0`` -> ``conv.0.0``).
    """
    scopes: list[str] = []
    for part in module_name.split("."):
        scopes.append(f"{scopes[-1]}.{part}" if part.isdigit() and scopes else part)
    return "/" + "/".join(scopes)
