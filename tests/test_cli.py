"""The ``pyprune`` command end to end: through its entry point in-process, and as the installed
console script where the process itself is what is tested (help, version, exit codes, Ctrl-C).

Every command's success path, every exit code (0 success, 1 target not reached with the best
model still written, 2 bad usage or bad input), ``--help`` everywhere, and the promises around
files: the input is never modified, and nothing is written when the command fails.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from pyprune.app.cli import main

from _cli import cli, console  # noqa: E402  (tests/ is on sys.path, see conftest.py)
from _models import mlp_proto  # noqa: E402

COMMANDS = ("inspect", "prune", "sensitivity", "bench", "run", "demo")


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit code 2 and exactly one line on stderr, `pyprune: error: ...`, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pyprune: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> subprocess.CompletedProcess[str]:
    """``main()`` in-process, for the long matrices of bad input (each case through the console
    script would cost a second of interpreter start-up); the console script runs a case of each."""
    argv = [str(a) for a in args]
    code = main(argv)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- models and data built in code ------------------------------------------------------------


def make_mlp(path: Path, sizes: tuple[int, ...] = (8, 16, 12, 4), seed: int = 0) -> Path:
    """Gemm -> Relu -> ... -> Gemm -> Softmax with a symbolic batch; two prunable hidden layers."""
    model = mlp_proto(sizes, seed)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model, a second smaller one, data labelled by the model itself, and broken inputs."""
    root = tmp_path_factory.mktemp("cli")
    model = make_mlp(root / "model.onnx")
    small = make_mlp(root / "small.onnx", sizes=(8, 10, 6, 4), seed=1)
    x = np.random.default_rng(2).standard_normal((96, 8)).astype(np.float32)
    labels = run_onnx(model, x).argmax(axis=1)  # the unpruned model scores 100%
    np.savez(root / "data.npz", input=x, label=labels)
    np.savez(root / "wrong_name.npz", pixels=x, label=labels)
    np.savez(root / "wrong_shape.npz", input=x[:, :5], label=labels)
    np.savez(root / "wrong_dtype.npz", input=x.astype(np.int32), label=labels)
    (root / "not_npz.npz").write_text("not a numpy archive")
    (root / "garbage.onnx").write_bytes(b"\x00\x01 definitely not a protobuf" * 10)
    return {"root": root, "model": model, "small": small, "data": root / "data.npz"}


# -- help and usage ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ("",) + COMMANDS)
def test_help_shows_usage_defaults_and_an_example(command: str) -> None:
    proc = console(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: pyprune {command}".rstrip())
    assert "example:" in proc.stdout
    text = " ".join(proc.stdout.split())  # help wraps lines
    if command == "prune":
        assert "(default: greedy)" in text and "(default: 0.01 with --data;" in text
    if command == "demo":
        assert "(default: pyprune-demo)" in text


def test_version() -> None:
    proc = console("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("pyprune ")


@pytest.mark.parametrize(
    "args, needle",
    [
        ((), "COMMAND"),
        (("frobnicate",), "invalid choice"),
        (("inspect",), "MODEL"),
        (("prune", "{model}", "-o", "{out}"), "one of the arguments --sparsity --params --macs --latency"),
        (("prune", "{model}", "-o", "{out}", "--macs", "0.5", "--params", "0.5"), "not allowed with"),
        (("prune", "{model}", "-o", "{out}", "--macs", "1.5"), "between 0 and 1"),
        (("prune", "{model}", "-o", "{out}", "--macs", "0.5", "--strategy", "best"), "invalid choice"),
        (("prune", "{model}", "-o", "{out}", "--macs", "0.5", "--threads", "0"), "positive integer"),
        (("prune", "{model}", "-o", "{out}", "--macs", "0.5", "--bogus"), "unrecognized arguments"),
        (("prune", "{model}", "-o", "{out}", "--macs", "0.5", "--round-to", "0"), "positive integer"),
        (("bench", "{model}", "--runs", "many"), "positive integer"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    files: dict[str, Path], args: tuple[str, ...], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["root"] / "never.onnx"
    assert_usage_error(run_main(capsys, *(a.format(model=files["model"], out=out) for a in args)), needle)
    assert not out.exists()


def test_bad_flag_through_the_console_script(files: dict[str, Path]) -> None:
    assert_usage_error(cli("prune", files["model"], "-o", files["root"] / "x.onnx"), "--macs")


# -- bad files --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "bench", "prune", "sensitivity"])
@pytest.mark.parametrize("name", ["does_not_exist.onnx", "garbage.onnx"])
def test_missing_and_corrupt_models_exit_2(
    files: dict[str, Path], command: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["root"] / "never.onnx"
    extra = {"prune": ["-o", out, "--macs", "0.5"], "sensitivity": ["--data", files["data"]]}
    assert_usage_error(run_main(capsys, command, files["root"] / name, *extra.get(command, [])), name)
    assert not out.exists()


def test_corrupt_model_through_the_console_script(files: dict[str, Path]) -> None:
    out = files["root"] / "never.onnx"
    proc = console("prune", files["root"] / "garbage.onnx", "-o", out, "--macs", "0.5")
    assert_usage_error(proc, "garbage.onnx", "not a valid ONNX model")
    assert not out.exists()


def test_debug_shows_the_traceback(files: dict[str, Path]) -> None:
    proc = console("inspect", files["root"] / "garbage.onnx", "--debug")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ModelLoadError" in proc.stderr


# -- bench --------------------------------------------------------------------------------------


def _expected_params(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(path).graph.initializer)


def test_bench_one_model(files: dict[str, Path]) -> None:
    proc = cli("bench", files["model"], "--runs", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    (entry,) = result["models"]
    assert entry["params"] == entry["nonzeros"] == _expected_params(files["model"])
    assert entry["macs"] == 8 * 16 + 16 * 12 + 12 * 4
    assert entry["latency_ms"] > 0 and "ratios" not in result and "metric" not in result


def test_bench_two_models_side_by_side_with_the_metric(files: dict[str, Path]) -> None:
    proc = cli("bench", files["model"], files["small"], "--data", files["data"],
                   "--labels", "label", "--runs", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    first, second = result["models"]
    assert second["params"] == _expected_params(files["small"])
    assert result["ratios"]["params"] == pytest.approx(second["params"] / first["params"])
    assert result["ratios"]["macs"] == pytest.approx((8 * 10 + 10 * 6 + 6 * 4) / (8 * 16 + 16 * 12 + 12 * 4))
    assert result["metric"] == "accuracy"
    assert first["metric"] == 1.0  # the labels are the first model's own predictions
    x, labels = (np.load(files["data"])[k] for k in ("input", "label"))
    assert second["metric"] == pytest.approx(float((run_onnx(files["small"], x).argmax(1) == labels).mean()))


def test_bench_table_and_fidelity_without_labels(files: dict[str, Path]) -> None:
    proc = cli("bench", files["model"], files["small"], "--data", files["data"], "--runs", "3")
    assert proc.returncode == 0, proc.stderr
    # random weights: the probabilities' largest value barely stands out, so cosine is the default
    assert "MACs" in proc.stdout and "ratio" in proc.stdout and "cosine (probabilities)" in proc.stdout
    named = cli("bench", files["model"], files["small"], "--data", files["data"], "--runs", "3",
                "--metric", "agreement")
    assert named.returncode == 0 and "agreement" in named.stdout


@pytest.mark.parametrize(
    "data, labels, needle",
    [
        ("wrong_name.npz", "label", "missing input 'input'"),
        ("wrong_shape.npz", "label", "input"),
        ("wrong_dtype.npz", "label", "input"),
        ("not_npz.npz", "label", "not_npz.npz"),
        ("data.npz", "nolabels", "no labels array 'nolabels'"),
        ("absent.npz", "label", "absent.npz"),
    ],
)
def test_bad_data_exits_2_before_any_work(
    files: dict[str, Path], data: str, labels: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["root"] / "never.onnx"
    for args in (("bench", files["model"]), ("prune", files["model"], "-o", out, "--macs", "0.5")):
        proc = run_main(capsys, *args, "--data", files["root"] / data, "--labels", labels)
        assert_usage_error(proc, needle)
    assert not out.exists()


def test_bad_data_through_the_console_script(files: dict[str, Path]) -> None:
    out = files["root"] / "never.onnx"
    proc = cli("prune", files["model"], "-o", out, "--macs", "0.5",
                   "--data", files["root"] / "wrong_shape.npz", "--labels", "label")
    assert_usage_error(proc, "input")
    assert not out.exists()


def test_bench_refuses_comparing_a_file_with_itself(files: dict[str, Path]) -> None:
    assert_usage_error(cli("bench", files["model"], files["model"]), "same file")


# -- inspect --------------------------------------------------------------------------------------


def test_inspect_prints_groups_and_totals(files: dict[str, Path]) -> None:
    proc = cli("inspect", files["model"])
    assert proc.returncode == 0, proc.stderr
    for needle in ("model.onnx", "fc0", "fc1", "Softmax", "MACs"):
        assert needle in proc.stdout


def test_inspect_json_is_machine_readable(files: dict[str, Path]) -> None:
    proc = cli("inspect", files["model"], "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["model"]["params"] == _expected_params(files["model"])
    assert info["model"]["macs"] == 8 * 16 + 16 * 12 + 12 * 4
    units = {g["root"]: (g["units"], g["frozen"]) for g in info["groups"]}
    assert units["fc0"] == (16, None) and units["fc1"] == (12, None)
    assert units["fc2"][0] == 4 and units["fc2"][1]  # the output layer is frozen, with a reason


# -- prune --------------------------------------------------------------------------------------


def _macs(path: Path) -> int:
    from pyprune.graph import load

    return load(path).macs()


def _runs_like_the_original(path: Path, original: Path) -> None:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(5).standard_normal((7, 8)).astype(np.float32)
    assert run_onnx(path, x).shape == run_onnx(original, x).shape


def test_prune_writes_the_model_and_the_report(files: dict[str, Path], tmp_path: Path) -> None:
    before = digest(files["model"])
    out, report = tmp_path / "new" / "folder" / "pruned.onnx", tmp_path / "report"
    proc = cli("prune", files["model"], "-o", out, "--macs", "0.8", "--strategy", "oneshot",
                   "--data", files["data"], "--labels", "label", "--max-drop", "none",
                   "--report", report, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet
    assert digest(files["model"]) == before
    _runs_like_the_original(out, files["model"])
    assert _macs(out) <= 0.8 * _macs(files["model"])
    assert {p.name for p in report.iterdir()} >= {"report.md", "report.json", "history.json", "metric_vs_cost.png"}
    summary = json.loads((report / "report.json").read_text())
    assert summary["met"] is True and summary["strategy"].startswith("oneshot")
    assert summary["after"]["macs"] == _macs(out)


@pytest.mark.parametrize("strategy, label", [("oneshot_global", "oneshot-global"), ("oneshot_local", "oneshot-local")])
def test_one_shot_scope_is_chosen_by_the_strategy_name(files: dict[str, Path], tmp_path: Path, capsys,
                                                       strategy: str, label: str) -> None:
    out = tmp_path / f"{strategy}.onnx"
    proc = run_main(capsys, "prune", files["model"], "-o", out, "--macs", "0.7", "--strategy", strategy,
                    "--max-drop", "none", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["met"] is True and summary["strategy"] == label
    assert summary["after"]["macs"] == _macs(out) <= 0.7 * _macs(files["model"])
    _runs_like_the_original(out, files["model"])


def test_round_to_keeps_multiples_of_n_units(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rounded.onnx"
    proc = cli("prune", files["model"], "-o", out, "--macs", "0.6", "--strategy", "greedy",
                   "--round-to", "4", "--max-drop", "none", "--quiet")
    assert proc.returncode == 0, proc.stderr
    widths = {i.name: i.dims for i in onnx.load(out).graph.initializer if i.name.startswith("w")}
    assert widths["w0"][1] % 4 == 0 and widths["w1"][1] % 4 == 0  # hidden layers of 16 and 12
    assert widths["w0"][1] * widths["w1"][1] < 16 * 12  # something was removed
    _runs_like_the_original(out, files["model"])


def test_skip_leaves_a_group_whole_and_unknown_names_exit_2(files: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "skipped.onnx"
    proc = cli("prune", files["model"], "-o", out, "--macs", "0.7", "--strategy", "oneshot",
                   "--skip", "fc0", "--max-drop", "none", "--quiet")
    assert proc.returncode == 0, proc.stderr
    widths = {i.name: i.dims for i in onnx.load(out).graph.initializer}
    assert widths["w0"][1] == 16 and widths["w1"][1] < 12  # fc0 whole, fc1 pruned
    never = tmp_path / "never.onnx"
    assert_usage_error(run_main(capsys, "prune", files["model"], "-o", never, "--macs", "0.7",
                                "--skip", "fc9", "--max-drop", "none"), "fc9", "fc0")
    assert not never.exists()


def test_prune_greedy_prints_the_before_after_table(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pruned.onnx"
    proc = cli("prune", files["model"], "-o", out, "--macs", "0.9", "--strategy", "greedy",
                   "--data", files["data"], "--labels", "label", "--max-drop", "0.1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Target reached" in proc.stdout and "MACs per sample" in proc.stdout
    assert str(out) in proc.stdout
    _runs_like_the_original(out, files["model"])
    assert _macs(out) <= 0.9 * _macs(files["model"])


def test_unreachable_target_exits_1_and_still_writes_the_best_model(files: dict[str, Path], tmp_path: Path) -> None:
    before = digest(files["model"])
    out = tmp_path / "best.onnx"
    proc = cli("prune", files["model"], "-o", out, "--macs", "0.05", "--max-drop", "0", "--holdout", "0",
                   "--strategy", "greedy", "--data", files["data"], "--labels", "label", "--quiet")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyprune: Target not reached"), proc.stderr
    assert str(out) in lines[0]
    _runs_like_the_original(out, files["model"])
    assert _macs(out) > 0.05 * _macs(files["model"])  # not reached ...
    x, labels = (np.load(files["data"])[k] for k in ("input", "label"))
    assert (run_onnx(out, x).argmax(1) == labels).mean() == 1.0  # ... and the constraint held
    assert digest(files["model"]) == before


def test_weights_without_data_use_synthetic_inputs(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sparse.onnx"
    proc = cli("prune", files["model"], "-o", out, "--granularity", "weight", "--sparsity", "0.5",
                   "--strategy", "oneshot", "--max-drop", "none")
    assert proc.returncode == 0, proc.stderr
    assert "synthetic" in proc.stdout
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    prunable = [weights[f"w{i}"] for i in range(3)]
    zeroed = sum(int((w == 0).sum()) for w in prunable) / sum(w.size for w in prunable)
    assert zeroed >= 0.5
    assert onnx.load(out).graph.node[0].op_type == "Gemm"  # same graph, masked weights


def test_two_of_four_weights(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "nm.onnx"
    proc = cli("prune", files["model"], "-o", out, "--granularity", "nm", "--sparsity", "0.5",
                   "--strategy", "oneshot", "--max-drop", "none", "--quiet")
    assert proc.returncode == 0, proc.stderr
    w1 = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}["w1"]
    # Gemm weight [K=16, N=12]: at most two non-zeros in every four along the reduction axis K
    blocks = (w1 != 0).reshape(4, 4, 12).sum(axis=1)
    assert blocks.max() <= 2


def test_in_place_overwrites_only_when_asked(files: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model = Path(shutil.copy(files["model"], tmp_path / "model.onnx"))
    before = digest(model)
    assert_usage_error(run_main(capsys, "prune", model, "-o", model, "--macs", "0.8"), "--in-place")
    assert_usage_error(run_main(capsys, "prune", model, "--macs", "0.8"), "-o/--output")
    assert_usage_error(run_main(capsys, "prune", model, "-o", tmp_path / "x.onnx", "--in-place", "--macs", "0.8"),
                       "--in-place")
    assert digest(model) == before
    proc = cli("prune", model, "--in-place", "--macs", "0.8", "--strategy", "oneshot", "--max-drop", "none", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert digest(model) != before
    assert _macs(model) <= 0.8 * _macs(files["model"])


def test_impossible_requests_exit_2_without_output(files: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never.onnx"
    cases = [
        (("--granularity", "weight", "--macs", "0.5"), "structured pruning"),
        (("--granularity", "channel", "--sparsity", "0.5"), "sparsity target"),
        (("--macs", "0.5", "--importance", "weird"), "weird"),
        (("--macs", "0.5", "--metric", "precision"), "unknown metric"),
        (("--macs", "0.5", "--labels", "label"), "--labels needs --data"),
        (("--macs", "0.5", "--data", files["data"], "--metric", "accuracy"), "needs labels"),
        (("--macs", "0"), "MACs"),
    ]
    for args, needle in cases:
        assert_usage_error(run_main(capsys, "prune", files["model"], "-o", out, *args), needle)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_ctrl_c_saves_the_best_model_so_far(files: dict[str, Path], tmp_path: Path) -> None:
    # Ctrl-C arrives as KeyboardInterrupt in the main thread; raise it from the third candidate
    # evaluation, exactly where a real interrupt lands during a search.
    script = (
        "import sys\n"
        "from pyprune.evaluate import _session\n"
        "run, calls = _session.MaskedSession.feed, [0]\n"
        "def interrupted(self, *a, **k):\n"
        "    calls[0] += 1\n"
        "    if calls[0] == 3:\n"
        "        raise KeyboardInterrupt\n"
        "    return run(self, *a, **k)\n"
        "_session.MaskedSession.feed = interrupted\n"
        "from pyprune.app.cli import main\n"
        "sys.exit(main())\n"
    )
    out = tmp_path / "best.onnx"
    proc = subprocess.run(
        [sys.executable, "-c", script, "prune", str(files["model"]), "-o", str(out), "--macs", "0.3",
         "--strategy", "greedy", "--data", str(files["data"]), "--labels", "label", "--max-drop", "0.5", "--quiet"],
        # `python -c` puts the working folder first on sys.path: run away from the source tree.
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("pyprune: interrupted.") and "Traceback" not in proc.stderr
    _runs_like_the_original(out, files["model"])


# -- sensitivity ----------------------------------------------------------------------------------


def test_sensitivity_prints_and_writes_the_table(files: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "sens"
    proc = cli("sensitivity", files["model"], "--data", files["data"], "--labels", "label",
                   "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert "fc0" in proc.stdout and "fc1" in proc.stdout
    assert any(p.suffix == ".png" for p in report.iterdir())
    assert any(p.suffix == ".json" for p in report.iterdir())


def test_importance_names_in_help_are_the_real_ones() -> None:
    from pyprune import importance, options

    assert tuple(options.IMPORTANCE_NAMES) == tuple(importance.REGISTRY)


@pytest.mark.parametrize("flag, value, needle", [
    ("--input-shape", "image", "expected NAME:D0,D1,... such as image:1,3,640,640"),
    ("--input-shape", "image:1,0,4", "expected positive integer sizes after image:"),
    ("--dim", "height", "expected SYMBOL=N such as height=640"),
    ("--dim", "height=big", "expected a positive integer size after height="),
])
def test_input_size_flags_are_checked_on_every_command(files: dict[str, Path], capsys, flag: str, value: str,
                                                       needle: str) -> None:
    for command in (("inspect",), ("prune", "-o", files["root"] / "x.onnx", "--macs", "0.5"),
                    ("bench",), ("sensitivity", "--data", files["data"])):
        proc = run_main(capsys, command[0], files["model"], *command[1:], flag, value)
        assert proc.returncode == 2 and needle in proc.stderr, (command, proc.stderr)


def test_a_size_given_twice_differently_is_refused(files: dict[str, Path], capsys) -> None:
    proc = run_main(capsys, "inspect", files["model"], "--dim", "batch=2", "--dim", "batch=3")
    assert_usage_error(proc, "--dim batch given twice with different sizes")


def test_the_judged_output_is_named_in_bench_and_prune(files: dict[str, Path], capsys) -> None:
    proc = run_main(capsys, "bench", files["model"], files["small"], "--data", files["data"], "--runs", "2",
                    "--metric-output", "nothere")
    assert_usage_error(proc, "--metric-output 'nothere'")
    out = files["root"] / "judged.onnx"
    proc = run_main(capsys, "prune", files["model"], "-o", out, "--macs", "0.8", "--strategy", "oneshot",
                    "--data", files["data"], "--labels", "label")
    assert proc.returncode in (0, 1) and "metric accuracy judges output" in proc.stdout
