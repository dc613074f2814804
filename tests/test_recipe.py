"""Recipes: validation that names the bad key before any work, and a two-step pipeline run."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import pyprune
from pyprune.app.recipes import RecipeError, load_recipe, run_recipe
from pyprune.graph import load
from pyprune.targets import MACs

from _cli import PYPRUNE, cli  # noqa: E402  (tests/ is on sys.path, see conftest.py)

DATA_DIR = Path(pyprune.__file__).parent / "assets"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "recipe.toml"


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """A folder holding the digits model and data, as a user's project would."""
    shutil.copy(DATA_DIR / "digits_mlp.onnx", tmp_path / "model.onnx")
    shutil.copy(DATA_DIR / "digits.npz", tmp_path / "digits.npz")
    return tmp_path


HEADER = """\
model = "model.onnx"
output = "out/final.onnx"
data = { path = "digits.npz", labels = "label" }
"""

CHANNELS = """
[[step]]
name = "channels"
granularity = "channel"
strategy = "greedy"
macs = 0.6
max_drop = 0.02
"""


def write(workdir: Path, text: str) -> Path:
    path = workdir / "recipe.toml"
    path.write_text(text)
    return path


def test_a_valid_recipe_resolves_paths_against_its_folder(workdir: Path) -> None:
    recipe = load_recipe(write(workdir, HEADER + 'metric = "accuracy"\nseed = 3\n' + CHANNELS + """round_to = 4
skip = ["/out/Gemm"]

[[step]]
name = "weights"
granularity = "nm"
strategy = "oneshot"
sparsity = 0.5
output = "out/weights.onnx"
report = "out/weights-report"
"""))
    assert recipe.model == workdir / "model.onnx"
    assert recipe.output == workdir / "out" / "final.onnx"
    assert recipe.data.path == workdir / "digits.npz" and recipe.data.labels == "label"
    first, second = recipe.steps
    assert (first.name, first.options.granularity, first.options.target) == ("channels", "channel", MACs(0.6))
    assert first.options.max_drop == 0.02 and first.options.metric == "accuracy" and first.options.seed == 3
    assert first.options.limits.round_to == 4 and first.options.limits.skip == ("/out/Gemm",)
    assert second.options.max_drop == "auto"  # the default: 0.01 on real data, none on synthetic
    assert second.options.limits.round_to == "auto" and second.options.limits.skip == ()
    assert second.output == workdir / "out" / "weights.onnx"
    assert second.report == workdir / "out" / "weights-report"


@pytest.mark.parametrize(
    "text, needles",
    [
        (HEADER.replace("model =", "modle =") + CHANNELS, ["unknown key 'modle'", "did you mean 'model'"]),
        (HEADER + CHANNELS.replace("granularity", "granularty"), ["step 1 ('channels')", "'granularty'"]),
        (HEADER + CHANNELS.replace('"channel"', '"filters"'), ["step 1", "'granularity' must be one of"]),
        (HEADER + CHANNELS.replace('"greedy"', '"best"'), ["'strategy' must be one of"]),
        (HEADER + CHANNELS.replace("macs = 0.6", ""), ["exactly one target key", "got none"]),
        (HEADER + CHANNELS + "params = 0.5\n", ["exactly one target key", "macs, params"]),
        (HEADER + CHANNELS.replace("0.6", "1.6"), ["'macs': MACs target", "(0, 1]"]),
        (HEADER + CHANNELS.replace("0.6", '"half"'), ["'macs' must be a number"]),
        (HEADER + CHANNELS.replace("max_drop = 0.02", "max_drop = -1"), ["'max_drop' must be a non-negative"]),
        (HEADER + CHANNELS + 'metric = "precision"\n', ["unknown metric 'precision'"]),
        (HEADER, ["no steps"]),
        (HEADER + "step = 3\n", ["'step' must be a list of tables"]),
        (HEADER.replace("model.onnx", "absent.onnx") + CHANNELS, ["'model' file 'absent.onnx' does not exist"]),
        (HEADER.replace("digits.npz", "absent.npz") + CHANNELS, ["data", "'absent.npz' does not exist"]),
        (HEADER.replace('output = "out/final.onnx"', 'output = "model.onnx"') + CHANNELS, ["is the input model"]),
        (HEADER.replace('output = "out/final.onnx"\n', "") + CHANNELS, ["missing 'output'"]),
        (HEADER + CHANNELS + CHANNELS, ["two steps are named 'channels'"]),
        (HEADER + CHANNELS + 'output = "out/final.onnx"\n', ["same file"]),
        (HEADER + "threads = 0\n" + CHANNELS, ["'threads' must be a positive integer"]),
        (HEADER + CHANNELS + "round_to = 0\n", ["'round_to' must be at least 1"]),
        (HEADER + CHANNELS + 'skip = "fc0"\n', ["'skip' must be a list"]),
        (HEADER.replace("data = { path", "data = { file") + CHANNELS, ["unknown key 'file'"]),
        ("model = [\n", ["not valid TOML"]),
    ],
)
def test_mistakes_name_the_step_and_key(workdir: Path, text: str, needles: list[str]) -> None:
    path = write(workdir, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message, (needle, message)
    assert not (workdir / "out").exists()


def test_a_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nowhere.toml")


def test_steps_without_data_are_refused(workdir: Path) -> None:
    text = HEADER.replace('data = { path = "digits.npz", labels = "label" }\n', "") + CHANNELS
    with pytest.raises(RecipeError, match="step 'channels' has no data"):
        load_recipe(write(workdir, text))
    # ... unless the step brings its own
    recipe = load_recipe(write(workdir, text + 'data = "digits.npz"\n'))
    assert recipe.steps[0].data.path == workdir / "digits.npz" and recipe.steps[0].data.labels is None


def test_the_example_recipe_is_valid() -> None:
    recipe = load_recipe(EXAMPLE)
    assert len(recipe.steps) >= 2
    assert recipe.model.is_file() and recipe.data.path.is_file()


# -- running ----------------------------------------------------------------------------------


TWO_STEPS = HEADER + 'report = "out/reports"\nmetric = "accuracy"\n' + """
[[step]]
name = "neurons"
granularity = "channel"
strategy = "greedy"
macs = 0.8
max_drop = 0.05
round_to = 4                   # hidden widths stay multiples of 4, so 2:4 fits the next step
output = "out/neurons.onnx"

[[step]]
name = "2:4 weights"
granularity = "nm"
strategy = "oneshot"
sparsity = 0.5
max_drop = "none"
"""


def _test_accuracy(path: Path) -> float:
    data = np.load(DATA_DIR / "digits.npz")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"input": data["test_input"]})[0].argmax(1) == data["test_label"]).mean())


def test_a_two_step_recipe_through_the_command_line(workdir: Path) -> None:
    recipe = write(workdir, TWO_STEPS)
    before = hashlib.sha256((workdir / "model.onnx").read_bytes()).hexdigest()
    proc = subprocess.run(PYPRUNE + ["run", str(recipe)], capture_output=True, text=True,
                          timeout=300, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "[1/2] neurons" in proc.stdout and "[2/2] 2:4 weights" in proc.stdout
    assert hashlib.sha256((workdir / "model.onnx").read_bytes()).hexdigest() == before

    original = load(workdir / "model.onnx")
    neurons, final = load(workdir / "out" / "neurons.onnx"), load(workdir / "out" / "final.onnx")
    for m in (neurons, final):
        onnx.checker.check_model(m.proto, full_check=True)
    # step 1 removed neurons to the MACs target; step 2 kept the shape and zeroed 2 of every 4
    assert neurons.macs() <= 0.8 * original.macs()
    assert final.macs() == neurons.macs() and final.params() == neurons.params()
    hidden = {t.name: onnx.numpy_helper.to_array(t) for t in final.proto.graph.initializer}["hidden.weight"]
    assert ((hidden != 0).reshape(hidden.shape[0], -1, 4).sum(axis=2) <= 2).all()  # Gemm transB: K last
    assert final.nonzeros() < 0.6 * neurons.nonzeros()
    # one report per step under the recipe's report folder
    for name in ("neurons", "2-4-weights"):
        report = json.loads((workdir / "out" / "reports" / name / "report.json").read_text())
        assert report["met"] is True
    assert _test_accuracy(workdir / "out" / "final.onnx") > 0.5


def test_a_step_that_misses_its_target_exits_1_but_writes_everything(workdir: Path) -> None:
    text = HEADER + CHANNELS.replace("macs = 0.6", "macs = 0.05").replace("max_drop = 0.02", "max_drop = 0.0")
    outcome = run_recipe(load_recipe(write(workdir, text)), quiet=True)
    assert not outcome.met
    assert (workdir / "out" / "final.onnx").is_file()
    proc = cli("run", workdir / "recipe.toml", "--quiet")
    assert proc.returncode == 1
    assert proc.stderr.startswith("pyprune: step 'channels': Target not reached"), proc.stderr


def test_a_bad_recipe_through_the_command_line_exits_2(workdir: Path) -> None:
    recipe = write(workdir, HEADER + CHANNELS.replace("strategy", "stratgy"))
    proc = cli("run", recipe)
    assert proc.returncode == 2
    assert proc.stderr.startswith("pyprune: error: ") and "'stratgy'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (workdir / "out").exists()


def test_input_sizes_and_the_judged_output_are_recipe_keys(workdir: Path) -> None:
    text = HEADER + 'dims = { batch = 4 }\nmetric_output = "probabilities"\n' + CHANNELS + \
        'input_shapes = { input = [1, 64] }\n'
    step = load_recipe(write(workdir, text)).steps[0]
    assert step.options.dims == {"batch": 4} and step.options.input_shapes == {"input": (1, 64)}
    assert step.options.metric_output == "probabilities"
    with pytest.raises(RecipeError, match=r"'dims' must be a table such as \{ height = 640 \}, got 640"):
        load_recipe(write(workdir, HEADER + "dims = 640\n" + CHANNELS))
    with pytest.raises(RecipeError, match=r"'input_shapes' must map input names to lists of positive sizes"):
        load_recipe(write(workdir, HEADER + CHANNELS + "input_shapes = { input = [1, -64] }\n"))
