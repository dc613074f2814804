"""Search loops on the bundled digits MLP: targets, constraint, shipped model equals masked run."""

from pathlib import Path

import numpy as np
import onnx
import pytest

import pyprune
from pyprune.data import Dataset
from pyprune.errors import TargetError
from pyprune.graph import load
from pyprune.search.greedy import GreedySearch
from pyprune.search.oneshot import OneShotSearch
from pyprune.search.random import RandomSearch
from pyprune.search.recursive import RecursiveSearch
from pyprune.targets import MACs, Params, Sparsity

DATA = Path(pyprune.__file__).parent / "assets"


@pytest.fixture(scope="module")
def mlp():
    arrays = np.load(DATA / "digits.npz")
    return load(DATA / "digits_mlp.onnx"), Dataset({"input": arrays["input"]}, arrays["label"])


@pytest.mark.parametrize("cls", [GreedySearch, RecursiveSearch, RandomSearch, OneShotSearch])
def test_reaches_macs_target_without_constraint(mlp, cls):
    model, data = mlp
    result = cls(model, data, target=MACs(0.7), max_drop=None, quiet=True, measure_latency=False).run()
    assert result.met
    assert result.model.macs() <= 0.7 * model.macs()
    assert result.report.verified
    onnx.checker.check_model(result.model.proto, full_check=True)


def test_constraint_holds_and_unreachable_target_is_reported(mlp):
    model, data = mlp
    search = GreedySearch(model, data, target=Params(0.2), max_drop=0.01, quiet=True, measure_latency=False)
    result = search.run()
    assert not result.met
    assert "not reached" in result.statement
    assert result.metric >= search.threshold


def test_sparsity_target_is_refused_for_channels(mlp):
    model, data = mlp
    with pytest.raises(TargetError):
        GreedySearch(model, data, target=Sparsity(0.5), quiet=True)


def test_report_files(mlp, tmp_path):
    model, data = mlp
    result = RecursiveSearch(model, data, target=MACs(0.8), max_drop=None, quiet=True,
                             measure_latency=False).run()
    files = result.report.write(tmp_path)
    assert files["plot"].exists()
    import json

    assert json.loads(files["json"].read_text())["strategy"] == "recursive"
