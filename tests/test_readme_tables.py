"""tools/readme_tables.py: the README's difference tables across runs come from the runs' CSVs."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "readme_tables.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("readme_tables", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _differences(path: Path, shift: float) -> Path:
    path.mkdir(parents=True)
    rows = [
        {"model": "deltanet", "comparison": "REFINE mid − SFT mid", "group": "S", "diff": 6.1 + shift,
         "ci_low": 3.4 + shift, "ci_high": 8.8 + shift},
        {"model": "deltanet", "comparison": "REFINE mid − SFT mid", "group": "QA", "diff": -0.2, "ci_low": -1.0,
         "ci_high": 0.0},
        {"model": "lact", "comparison": "TTT-REFINE − TTT-SFT", "group": "QA", "diff": 0.0, "ci_low": 0.0,
         "ci_high": 0.0},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(path / "differences_table.csv", index=False)
    return path


def test_replicas_put_each_runs_difference_on_its_own_row(tool, tmp_path, capsys):
    main, other = _differences(tmp_path / "a", 0.0), _differences(tmp_path / "b", -10.0)
    tool.main([str(main), "--replica", f"base seed 1={other}"])
    out = capsys.readouterr().out
    across = out.split("### Differences across runs")[1]
    assert "| deltanet | REFINE mid − SFT mid | main run | +6.1 [+3.4, +8.8] | -0.2 [-1.0, +0.0] |" in across
    assert "| deltanet | REFINE mid − SFT mid | base seed 1 | -3.9 [-6.6, -1.2] | -0.2 [-1.0, +0.0] |" in across
    assert "| lact | TTT-REFINE − TTT-SFT | base seed 1 | — | +0.0 [+0.0, +0.0] |" in across


def test_a_replica_without_a_label_is_refused(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path), "--replica", str(tmp_path)])
