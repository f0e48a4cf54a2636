"""tools/gpu_check.sh and tools/gpu_paper_measure.py, as far as a CPU can check them: the script
parses, names only files that exist and the wheels pyproject.toml pins; the measurement runs end to
end at tiny sizes (`--tiny`) and writes the expected columns; an out-of-memory case is recorded and
followed by its one-row fallback, and the run goes on."""

import csv
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.sh"


def _measure_module():
    spec = importlib.util.spec_from_file_location("gpu_paper_measure", REPO / "tools" / "gpu_paper_measure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _read(out: Path) -> tuple[list[str], list[dict]]:
    with open(out / "paper_measure.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def test_gpu_check_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_gpu_check_script_names_only_existing_files_and_gpu_tests():
    text = SCRIPT.read_text()
    paths = set(re.findall(r"\b(?:tests|tools|config|refine)/[\w./-]*\w", text))
    assert {"tests/gpu", "tools/gpu_paper_measure.py"} <= paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert missing == []
    gpu_tests = sorted((REPO / "tests" / "gpu").glob("test_*.py"))
    assert gpu_tests
    for path in gpu_tests:  # every file the script's `-m gpu` selects is marked and skips without CUDA
        source = path.read_text()
        assert "pytest.mark.gpu" in source and "torch.cuda.is_available()" in source, path.name
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("gpu:") for m in markers)


def test_the_carried_wheels_are_the_pinned_versions():
    header = SCRIPT.read_text()
    wheels = dict(re.findall(r"([A-Za-z0-9_.-]+)==([\w.]+)", header))
    assert wheels.get("flash-linear-attention") == "0.6.0"
    pins = dict(
        re.match(r"([A-Za-z0-9_.-]+)==([\w.]+)", dep).groups()
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    for name, version in wheels.items():
        if name in pins:
            assert version == pins[name], name
    assert "torch" not in wheels and "triton" not in wheels  # the image's CUDA builds stay


def test_tiny_measurement_writes_every_column(tmp_path):
    measure = _measure_module()
    assert measure.main(["--tiny", "--updates", "1", "--out", str(tmp_path), "--cases", "refine", "ntp"]) == 0
    columns, rows = _read(tmp_path)
    assert columns == measure.COLUMNS
    assert [r["case"] for r in rows] == ["refine", "ntp"]
    for row in rows:
        assert row["status"] == "ok", row
        assert float(row["time_first_s"]) > 0 and float(row["est_total_gib"]) > 0
        assert int(row["optimizer_steps_per_update"]) >= 1 and int(row["updates"]) == 1
        assert row["device"] == "cpu" and row["peak_gib"] == ""  # peak memory is a CUDA reading
    refine = rows[0]
    # the per-GPU rows come from the paper config (whatever it holds now): one step per mini-batch
    mini = int(refine["mini_batch_per_gpu"] or refine["rows_per_gpu"])
    assert int(refine["optimizer_steps_per_update"]) == int(refine["rows_per_gpu"]) // mini
    saved = json.loads((tmp_path / "paper_measure.json").read_text())
    assert [r["case"] for r in saved["rows"]] == ["refine", "ntp"] and saved["environment"]["fla"] == "0.6.0"


def test_an_out_of_memory_case_is_recorded_and_falls_back_to_one_row(tmp_path, monkeypatch):
    measure = _measure_module()
    real = measure.one_update

    def one_update(model, method, batch, optimizer, cfg, device, batches):
        if batch["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
        return real(model, method, batch, optimizer, cfg, device, batches)

    monkeypatch.setattr(measure, "one_update", one_update)
    override = tmp_path / "override.yaml"  # 2 rows per GPU at W = 8, whatever paper.yaml says now
    override.write_text("gpus_per_job: 8\nmidtrain:\n  sft:\n    train: {batch_size: 16, grad_accum: 2}\n")
    configs = [str(REPO / "config" / "config.yaml"), str(REPO / "config" / "paper.yaml"), str(override)]
    argv = ["--tiny", "--updates", "1", "--out", str(tmp_path), "--cases", "ntp", "--config", *configs]
    assert measure.main(argv) == 0
    _, rows = _read(tmp_path)
    assert [(r["case"], r["status"]) for r in rows] == [("ntp", "oom"), ("ntp_1row", "ok")]
    assert "out of memory" in rows[0]["error"]
    one_row = rows[1]
    assert (rows[0]["rows_per_gpu"], rows[0]["grad_accum"]) == ("2", "2")
    assert (one_row["rows_per_gpu"], one_row["grad_accum"]) == ("1", "4")  # the same rows per step


@pytest.mark.parametrize("budget", ["0"])
def test_cases_past_the_time_budget_are_skipped(tmp_path, budget):
    measure = _measure_module()
    assert measure.main(["--tiny", "--out", str(tmp_path), "--time-budget", budget, "--cases", "ntp"]) == 0
    _, rows = _read(tmp_path)
    assert [(r["case"], r["status"]) for r in rows] == [("ntp", "skipped_time")]
