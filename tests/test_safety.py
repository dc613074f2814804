"""Nothing lost, nothing false: outputs never overwrite what a run reads, saves are atomic at every
step, interrupts keep the work, bad input is refused before any work with a message naming it,
and what is written says what happened."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, external_data_helper, helper, numpy_helper

import pyprune
from pyprune import _files
from pyprune.data import Dataset
from pyprune.errors import DataError, ModelLoadError, UnsupportedModelError
from pyprune.evaluate import model_session
from pyprune.graph import load

from _cli import PYPRUNE, cli  # noqa: E402  (tests/ is on sys.path)
from _models import mlp_proto  # noqa: E402

# -- models and data --------------------------------------------------------------------------


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its content hash."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def work(tmp_path: Path) -> dict[str, Path]:
    """A model (plain, and with external weights in weights.bin), data labelled by the model."""
    proto = mlp_proto()
    onnx.save(proto, tmp_path / "model.onnx")
    ext = tmp_path / "ext"
    ext.mkdir()
    # wide enough that the pruned model's weights still go to an external file (over 1 KB each)
    onnx.save_model(mlp_proto(sizes=(8, 256, 64, 4)), ext / "in.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    x = np.random.default_rng(2).standard_normal((64, 8)).astype(np.float32)
    labels = run_onnx(tmp_path / "model.onnx", x).argmax(axis=1)
    np.savez(tmp_path / "calib.npz", input=x, label=labels)
    np.savez(ext / "calib.npz", input=x, label=labels)
    return {"root": tmp_path, "model": tmp_path / "model.onnx", "data": tmp_path / "calib.npz",
            "ext": ext, "ext_model": ext / "in.onnx", "ext_data": ext / "calib.npz"}


PRUNE = ("--params", "0.7", "--strategy", "oneshot", "--max-drop", "none", "--quiet")


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyprune: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- 1-2: outputs never overwrite what the run reads -------------------------------------------


def test_output_cannot_be_the_models_external_data(work):
    before = snapshot(work["ext"])
    proc = cli("prune", work["ext_model"], "-o", work["ext"] / "weights.bin", *PRUNE)
    one_line_error(proc, "weights.bin", "external data")
    assert snapshot(work["ext"]) == before
    run_onnx(work["ext_model"], np.ones((1, 8), np.float32))  # the input still loads


def test_an_output_whose_usual_weights_name_is_taken_writes_beside_it(work):
    """-o small.onnx where the input reads small.onnx.data, and an unrelated out.onnx.data: both stay."""
    ext = work["ext"]
    onnx.save_model(mlp_proto(seed=3), ext / "other.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="small.onnx.data", size_threshold=0)
    (ext / "out.onnx.data").write_bytes(b"somebody else's file")
    before = snapshot(ext)
    for out in ("small.onnx", "out.onnx"):
        proc = cli("prune", ext / "other.onnx", "-o", ext / out, *PRUNE)
        assert proc.returncode == 0, proc.stderr
        onnx.checker.check_model(str(ext / out), full_check=True)
    after = snapshot(ext)
    for name, h in before.items():
        assert after[name] == h, f"{name} was modified"
    run_onnx(ext / "other.onnx", np.ones((1, 8), np.float32))


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotdot"])
def test_output_cannot_be_the_data_file_by_any_name(work, how):
    root = work["root"]
    data = work["data"]
    out = {"same": data, "dotdot": root / "sub" / ".." / "calib.npz"}.get(how)
    if how == "symlink":
        out = root / "link.npz"
        out.symlink_to(data)
    elif how == "hardlink":
        out = root / "hard.npz"
        os.link(data, out)
    (root / "sub").mkdir(exist_ok=True)
    before = digest(data)
    proc = cli("prune", work["model"], "-o", out, "--data", data, "--labels", "label", *PRUNE)
    one_line_error(proc, "data file")
    assert digest(data) == before


@pytest.mark.parametrize("field", ["output", "step_output", "report"])
def test_recipe_outputs_cannot_be_what_it_reads(work, field):
    root = work["root"]
    recipe = root / "recipe.toml"
    targets = {"output": '"calib.npz"', "step_output": '"recipe.toml"', "report": '"model.onnx"'}
    output = targets["output"] if field == "output" else '"out.onnx"'
    text = (f'model = "model.onnx"\noutput = {output}\n'
            'data = { path = "calib.npz", labels = "label" }\n'
            + (f"report = {targets['report']}\n" if field == "report" else "")
            + '[[step]]\ngranularity = "channel"\nstrategy = "oneshot"\nparams = 0.7\nmax_drop = "none"\n'
            + (f"output = {targets['step_output']}\n" if field == "step_output" else ""))
    recipe.write_text(text)
    before = snapshot(root)
    one_line_error(cli("run", recipe, "--quiet"))
    assert snapshot(root) == before


# -- 3: external-data saves are atomic at every step ------------------------------------------


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return run_onnx(path, x)


@pytest.mark.parametrize("step", range(4))
def test_a_crash_at_any_step_of_an_in_place_save_leaves_a_whole_model(work, monkeypatch, step):
    """The weights file, then the model, then the old weights' removal: kill the save at each step.
    What is on disk is always the old model with its weights or the new one with its own."""
    path = work["ext_model"]
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    old = _outputs(path, x)
    model = load(path)
    pruned = pyprune.prune(model, None, target=pyprune.Params(0.7), strategy="oneshot", max_drop=None,
                           quiet=True, measure_latency=False).model
    calls = {"n": 0}
    real_replace, real_unlink = os.replace, Path.unlink

    class Crash(Exception):
        pass

    def counted(real):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == step + 1:
                raise Crash
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(os, "replace", counted(real_replace))
    monkeypatch.setattr(Path, "unlink", counted(real_unlink))
    crashed = False
    try:
        pruned.save(path, overwrite_input=True)
    except Crash:
        crashed = True
    monkeypatch.undo()
    onnx.checker.check_model(str(path), full_check=True)
    got = _outputs(path, x)
    new = pruned  # what the new model computes (its weights mapped from files: a pyprune session)
    session = model_session(new)
    expected_new = session.run(None, {"input": x})[0]
    assert np.allclose(got, old) or np.allclose(got, expected_new)
    if not crashed:  # a save that finished: the new model, and no orphaned weights
        assert np.allclose(got, expected_new)
    leftovers = [p for p in path.parent.iterdir() if p.name.startswith(_files.TEMP_PREFIX)]
    assert not leftovers


def test_in_place_removes_the_replaced_weights_and_keeps_no_orphans(work):
    ext = work["ext"]
    proc = cli("prune", work["ext_model"], "--in-place", *PRUNE, cwd=ext)  # from the model's own folder
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in ext.iterdir())
    assert "weights.bin" not in files
    referenced = {external_data_helper.ExternalDataInfo(t).location
                  for t in onnx.load(str(work["ext_model"]), load_external_data=False).graph.initializer
                  if external_data_helper.uses_external_data(t)}
    assert set(files) == {"in.onnx", "calib.npz"} | referenced


def test_saving_twice_to_the_same_output_from_its_folder(work):
    out_dir = work["root"] / "out"
    out_dir.mkdir()
    for _ in range(2):
        proc = cli("prune", work["ext_model"], "-o", "small.onnx", *PRUNE, cwd=out_dir)
        assert proc.returncode == 0, proc.stderr
        onnx.checker.check_model(str(out_dir / "small.onnx"), full_check=True)
    assert len([p for p in out_dir.iterdir() if p.suffix == ".data"]) == 1  # the replaced weights went


# -- 5: recipe paths are confined --------------------------------------------------------------


@pytest.mark.parametrize("where", ["../outside.onnx", "ABSOLUTE"])
def test_recipe_outputs_stay_in_the_recipe_folder(work, tmp_path_factory, where):
    root = work["root"] / "recipes"
    root.mkdir()
    (root / "model.onnx").write_bytes(work["model"].read_bytes())
    (root / "calib.npz").write_bytes(work["data"].read_bytes())
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "stolen.onnx"
    target = str(elsewhere) if where == "ABSOLUTE" else where
    recipe = root / "recipe.toml"
    recipe.write_text(f'model = "model.onnx"\noutput = "{target}"\ndata = {{ path = "calib.npz", labels = "label" }}\n'
                      '[[step]]\ngranularity = "channel"\nstrategy = "oneshot"\nparams = 0.7\nmax_drop = "none"\n')
    one_line_error(cli("run", recipe, "--quiet"), "outside the recipe's folder", "--allow-outside")
    assert not elsewhere.exists() and not (work["root"] / "outside.onnx").exists()
    proc = cli("run", recipe, "--quiet", "--allow-outside")
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere if where == "ABSOLUTE" else work["root"] / "outside.onnx").is_file()


# -- 6-7: interrupts keep the work; no debris --------------------------------------------------


def _run_script(script: str, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_sigterm_during_the_search_writes_the_best_model(work):
    script = ("import os, signal, sys\n"
              "from pyprune.evaluate import _session\n"
              "run, calls = _session.MaskedSession.feed, [0]\n"
              "def terminated(self, *a, **k):\n"
              "    calls[0] += 1\n"
              "    if calls[0] == 4:\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "    return run(self, *a, **k)\n"
              "_session.MaskedSession.feed = terminated\n"
              "from pyprune.app.cli import main\n"
              "sys.exit(main())\n")
    out = work["root"] / "best.onnx"
    proc = _run_script(script, "prune", work["model"], "-o", out, "--macs", "0.3", "--strategy", "greedy",
                       "--data", work["data"], "--labels", "label", "--max-drop", "0.5", "--quiet", cwd=work["root"])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("pyprune: interrupted.") and "Traceback" not in proc.stderr
    onnx.checker.check_model(str(out), full_check=True)


def test_an_interrupt_while_shipping_still_writes_the_finished_result(work):
    """Ctrl-C landing in the final checks (here: during the checker) is remembered, not obeyed."""
    script = ("import importlib, os, signal, sys\n"
              "ship = importlib.import_module('pyprune.search.ship')\n"
              "run_model = ship.run_model\n"
              "def interrupted(*a, **k):\n"
              "    os.kill(os.getpid(), signal.SIGINT)  # lands while the shipped model is checked\n"
              "    return run_model(*a, **k)\n"
              "ship.run_model = interrupted\n"
              "from pyprune.app.cli import main\n"
              "sys.exit(main())\n")
    out = work["root"] / "shipped.onnx"
    proc = _run_script(script, "prune", work["model"], "-o", out, "--params", "0.8", "--strategy", "oneshot",
                       "--max-drop", "none", "--quiet", cwd=work["root"])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("pyprune: interrupted.") and "Traceback" not in proc.stderr
    onnx.checker.check_model(str(out), full_check=True)


def test_an_interrupt_before_anything_started_is_one_line(monkeypatch):
    from pyprune.app import cli as cli_module

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "build_parser", interrupted)
    proc = cli("inspect", "model.onnx")
    assert proc.returncode == 130 and proc.stderr == "pyprune: interrupted\n"


def test_stale_temporary_folders_of_dead_processes_are_removed(work):
    dead = work["root"] / f"{_files.TEMP_PREFIX}999999-abcdef"
    dead.mkdir()
    (dead / "partial.onnx").write_bytes(b"x" * 1000)
    proc = cli("prune", work["model"], "-o", work["root"] / "out.onnx", *PRUNE)
    assert proc.returncode == 0, proc.stderr
    assert not dead.exists()


# -- 8: every output checked before any work ---------------------------------------------------


@pytest.mark.parametrize("case", ["trailing_slash", "parent_is_a_file", "report_is_a_file", "output_is_a_folder"])
def test_outputs_are_checked_before_any_work(work, monkeypatch, case):
    from pyprune.search import PruningProblem

    def no_work(*args, **kwargs):
        raise AssertionError("the search started")

    monkeypatch.setattr(PruningProblem, "__init__", no_work)
    root = work["root"]
    (root / "a_file").write_text("x")
    (root / "a_folder").mkdir()
    args = {
        "trailing_slash": ["-o", str(root / "newdir") + "/"],
        "parent_is_a_file": ["-o", root / "a_file" / "out.onnx"],
        "report_is_a_file": ["-o", root / "out.onnx", "--report", root / "a_file"],
        "output_is_a_folder": ["-o", root / "a_folder"],
    }[case]
    one_line_error(cli("prune", work["model"], *args, *PRUNE))
    assert not (root / "newdir").exists() and not (root / "out.onnx").exists()


def test_a_recipe_output_that_is_a_folder_is_refused(work):
    root = work["root"]
    (root / "taken").mkdir()
    recipe = root / "recipe.toml"
    recipe.write_text('model = "model.onnx"\noutput = "taken"\ndata = { path = "calib.npz", labels = "label" }\n'
                      '[[step]]\ngranularity = "channel"\nstrategy = "oneshot"\nparams = 0.7\n')
    one_line_error(cli("run", recipe), "folder")


# -- 9-12: strict inputs, messages that name the problem ----------------------------------------


def test_bad_data_files_are_data_errors(work):
    root = work["root"]
    (root / "empty.npz").write_bytes(b"")
    np.save(root / "one.npy", np.ones((4, 8), np.float32))
    (root / "text.npz").write_text("input,label\n1,2\n")
    np.savez(root / "zero.npz", input=np.ones((0, 8), np.float32))
    cases = {"empty.npz": "empty", "one.npy": ".npy", "text.npz": "not a readable .npz", "zero.npz": "no samples"}
    for name, needle in cases.items():
        with pytest.raises(DataError, match=needle):
            Dataset.from_npz(root / name)
        one_line_error(cli("prune", work["model"], "-o", root / "o.onnx", "--data", root / name, *PRUNE), needle)
    with pytest.raises(DataError, match="Dataset.from_npz"):
        pyprune.prune(load(work["model"]), str(work["data"]), quiet=True)


def test_labels_out_of_range_negative_or_strings_are_refused(work):
    root = work["root"]
    x = np.load(work["data"])["input"]
    for name, labels, needle in [("big", np.full(64, 7), "4 classes"), ("neg", np.full(64, -1), "4 classes"),
                                 ("str", np.array(["a"] * 64), "dtype")]:
        np.savez(root / f"{name}.npz", input=x, label=labels)
        proc = cli("prune", work["model"], "-o", root / "o.onnx", "--data", root / f"{name}.npz",
                   "--labels", "label", *PRUNE)
        one_line_error(proc, needle)


def test_nan_inputs_and_weights_are_refused_by_name(work):
    root = work["root"]
    x = np.load(work["data"])["input"].copy()
    x[3, 2] = np.nan
    np.savez(root / "nan.npz", input=x)
    one_line_error(cli("prune", work["model"], "-o", root / "o.onnx", "--data", root / "nan.npz", *PRUNE),
                   "'input'", "NaN")
    proto = mlp_proto()
    w = numpy_helper.to_array(proto.graph.initializer[2]).copy()
    w[0, 0] = np.inf
    proto.graph.initializer[2].CopyFrom(numpy_helper.from_array(w, proto.graph.initializer[2].name))
    onnx.save(proto, root / "inf.onnx")
    one_line_error(cli("prune", root / "inf.onnx", "-o", root / "o.onnx", *PRUNE), "'w1'", "NaN or Inf")
    with pytest.raises(UnsupportedModelError, match="'w1'"):
        pyprune.prune(load(root / "inf.onnx"), None, quiet=True)


def test_extra_arrays_of_another_size_are_ignored(work):
    root = work["root"]
    data = np.load(work["data"])
    np.savez(root / "with_test.npz", input=data["input"], label=data["label"],
             test_input=data["input"][:10], test_label=data["label"][:10])
    proc = cli("prune", work["model"], "-o", root / "o.onnx", "--data", root / "with_test.npz", "--labels",
               "label", *PRUNE)
    assert proc.returncode == 0, proc.stderr


def test_messages_name_the_problem(work):
    root = work["root"]
    one_line_error(cli("prune", root, "-o", root / "o.onnx", *PRUNE), "folder")
    with pytest.raises(ModelLoadError, match="is a folder"):
        load(root)
    one_line_error(cli("prune", work["model"], "-o", root / "o.onnx", "--seed", "-1", *PRUNE[:-1]), "--seed")
    recipe = root / "recipe.toml"
    recipe.write_text('model = "model.onnx"\noutput = "o.onnx"\ndata = { path = "calib.npz" }\nseed = -1\n'
                      '[[step]]\ngranularity = "channel"\nparams = 0.7\n')
    one_line_error(cli("run", recipe), "'seed'")


def test_a_model_reading_a_missing_tensor_is_named_in_full(work):
    proto = mlp_proto()
    proto.graph.node[0].input[1] = "nowhere_to_be_found"
    onnx.save(proto, work["root"] / "broken.onnx")
    proc = cli("inspect", work["root"] / "broken.onnx")
    one_line_error(proc, "nowhere_to_be_found")


# -- 13-16: results that say what happened -----------------------------------------------------


@pytest.mark.parametrize("granularity", ["weight", "nm"])
def test_weight_outputs_carry_no_dead_tensors(work, granularity):
    root = work["root"]
    onnx.save(mlp_proto(bn=True), root / "bn.onnx")
    x = np.load(work["data"])["input"]
    np.savez(root / "bn.npz", input=x)
    out = root / f"{granularity}.onnx"
    target = ("--sparsity", "0.3") if granularity == "weight" else ("--sparsity", "0.2")
    proc = cli("prune", root / "bn.onnx", "-o", out, "--granularity", granularity, *target, "--strategy", "oneshot",
               "--data", root / "bn.npz", "--max-drop", "none", "--quiet")
    assert proc.returncode == 0, proc.stderr
    shipped = onnx.load(str(out))
    read = {i for n in shipped.graph.node for i in n.input}
    assert all(t.name in read for t in shipped.graph.initializer)
    assert len(shipped.graph.initializer) == len(mlp_proto(bn=True).graph.initializer)


def test_the_statement_is_printed_once_and_logs_have_no_bar_frames(work):
    proc = cli("prune", work["model"], "-o", work["root"] / "o.onnx", "--macs", "0.05", "--max-drop", "0",
               "--strategy", "greedy", "--data", work["data"], "--labels", "label")
    assert proc.returncode == 1
    both = proc.stdout + proc.stderr
    assert both.count("Target not reached") == 1
    assert "\r" not in proc.stderr
    assert "pyprune: search:" in proc.stderr  # one line per committed step instead of a bar


def test_json_for_prune_sensitivity_and_run(work):
    root = work["root"]
    proc = cli("prune", work["model"], "-o", root / "o.onnx", "--params", "0.7", "--strategy", "oneshot",
               "--max-drop", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["met"] is True and report["output"] == str(root / "o.onnx")
    proc = cli("sensitivity", work["model"], "--data", work["data"], "--labels", "label", "--json",
               "--round-to", "2")
    assert proc.returncode == 0, proc.stderr
    analysis = json.loads(proc.stdout)
    assert all(c % 2 == 0 for row in analysis["rows"] for c in row["counts"] if c < row["size"])
    recipe = root / "recipe.toml"
    recipe.write_text('model = "model.onnx"\noutput = "final.onnx"\ndata = { path = "calib.npz", labels = "label" }\n'
                      '[[step]]\ngranularity = "channel"\nstrategy = "oneshot"\nparams = 0.7\nmax_drop = "none"\n')
    proc = cli("run", recipe, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"][0]["met"] is True


def test_sensitivity_shows_what_each_ratio_removed(work):
    proc = cli("sensitivity", work["model"], "--data", work["data"], "--labels", "label", "--round-to", "4")
    assert proc.returncode == 0, proc.stderr
    assert "units each ratio removed" in proc.stdout
    assert "(0)" in proc.stdout  # 10% of a 16-unit group with round_to 4 removes nothing, and says so


def test_verbose_prints_the_search_path(work):
    proc = cli("prune", work["model"], "-o", work["root"] / "o.onnx", "--params", "0.7", "--strategy", "oneshot",
               "--max-drop", "none", "-v")
    assert proc.returncode == 0, proc.stderr
    assert "search path:" in proc.stdout and "one-shot local cut" in proc.stdout


def test_reports_are_as_readable_as_models(work):
    root = work["root"]
    proc = cli("prune", work["model"], "-o", root / "o.onnx", "--report", root / "report", *PRUNE)
    assert proc.returncode == 0, proc.stderr
    model_mode = stat.S_IMODE((root / "o.onnx").stat().st_mode)
    for f in (root / "report").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == model_mode, f


def test_seed_help_shows_no_empty_default():
    from _cli import console

    proc = console("prune", "--help")
    assert "(default: 0)" not in proc.stdout


def test_the_console_script_exits_with_documented_codes_only(work):
    """A few adversarial cases through the installed command: exit codes 0, 1, 2 and inputs untouched."""
    root = work["root"]
    before = snapshot(root)
    cases = [
        (["prune", work["model"], "-o", work["data"], "--data", work["data"], *PRUNE], 2),
        (["prune", work["ext_model"], "-o", work["ext"] / "weights.bin", *PRUNE], 2),
        (["prune", root / "nope.onnx", "-o", root / "o.onnx", *PRUNE], 2),
        (["prune", work["model"], "-o", root / "new" / "o.onnx", *PRUNE], 0),
    ]
    for args, code in cases:
        proc = subprocess.run(PYPRUNE + [str(a) for a in args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    after = snapshot(root)
    assert {k: v for k, v in after.items() if not k.startswith("new")} == before


def test_sigint_handler_is_restored_after_a_run(work):
    handler = signal.getsignal(signal.SIGINT)
    cli("prune", work["model"], "-o", work["root"] / "o.onnx", *PRUNE)
    assert signal.getsignal(signal.SIGINT) is handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_nm_says_what_is_reachable_and_meets_a_target_equal_to_it():
    """Every eligible tensor already 2:4, the rest cannot take the pattern: the statement names the
    reachable sparsity and the tensors that cannot; asking for exactly that sparsity is met."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 16)).astype(np.float32)
    w1[2:4], w1[6:8] = 0.0, 0.0  # 2:4 along K already
    w2 = rng.standard_normal((16, 6)).astype(np.float32)
    w3 = rng.standard_normal((6, 4)).astype(np.float32)  # K = 6: no 2:4
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h1"], name="a"),
             helper.make_node("Relu", ["h1"], ["r1"], name="r1"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="b"),
             helper.make_node("Relu", ["h2"], ["r2"], name="r2"),
             helper.make_node("MatMul", ["r2", "w3"], ["y"], name="c")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))])
    model = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    fast = dict(granularity="nm", strategy="greedy", max_drop=None, quiet=True, measure_latency=False)
    too_far = pyprune.prune(model, None, target=pyprune.Sparsity(0.9), **fast)
    assert not too_far.met and "can be reached" in too_far.statement and "w3" in too_far.statement
    reachable = float(too_far.statement.split("at most sparsity ")[1].split()[0])
    exact = pyprune.prune(model, None, target=pyprune.Sparsity(reachable - 5e-4), **fast)
    assert exact.met
