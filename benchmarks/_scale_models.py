"""The models of ``bench_scale.py``: ResNet-18, ResNet-50 and a BERT-base-sized encoder, exported to ONNX.

Run with an interpreter that has torch (and transformers for the encoder)::

    python benchmarks/_scale_models.py OUT_DIR [--quick]

ResNets are torchvision's architectures written out in plain torch (``_torch_models.py``), random
weights (seeded), BatchNorm statistics randomised, exported with the TorchScript exporter and a
symbolic batch axis. The encoder is ``transformers.BertModel`` built from ``BertConfig()`` (12
layers, hidden 768, 12 heads, FFN 3072: BERT-base's shapes) with random weights, no download;
it outputs the last hidden state for sequences of ``SEQ`` tokens. ``--quick`` exports small
versions (ResNet-18 at a quarter of the width, a 2-layer encoder) for a smoke run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _torch_models import ResNet, _randomise_batchnorm  # noqa: E402

SEQ = 64


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block (stride on the 3x3 convolution, v1.5)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(ResNet):
    def __init__(self, width: int = 64, num_classes: int = 1000) -> None:
        nn.Module.__init__(self)
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make(width, 3)
        self.layer2 = self._make(2 * width, 4, 2)
        self.layer3 = self._make(4 * width, 6, 2)
        self.layer4 = self._make(8 * width, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * 4, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def _export_cnn(model: nn.Module, path: Path, size: int) -> None:
    torch.manual_seed(0)
    _randomise_batchnorm(model, torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamo=False,
                          do_constant_folding=True, dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


class _Encoder(nn.Module):
    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _export_bert(path: Path, layers: int) -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=layers, attn_implementation="eager")
    model = _Encoder(BertModel(config, add_pooling_layer=False)).eval()
    ids = torch.randint(0, config.vocab_size, (1, SEQ))
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask), str(path), opset_version=17, dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          do_constant_folding=True,
                          dynamic_axes={"input_ids": {0: "N"}, "attention_mask": {0: "N"}, "hidden": {0: "N"}})


def main() -> None:
    out = Path(sys.argv[1])
    quick = "--quick" in sys.argv
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    jobs = {
        f"resnet18{suffix}": lambda p: _export_cnn(ResNet([2, 2, 2, 2], width=16 if quick else 64), p,
                                                   64 if quick else 224),
        f"bert_base{suffix}": lambda p: _export_bert(p, 2 if quick else 12),
    }
    if not quick:
        jobs["resnet50"] = lambda p: _export_cnn(ResNet50(), p, 224)
    for name, make in jobs.items():
        path = out / f"{name}.onnx"
        if not path.exists():
            tmp = path.with_suffix(".onnx.part")
            make(tmp)
            tmp.replace(path)
        print(path)


if __name__ == "__main__":
    main()
