"""Bad input stops with one line naming the file, key or record (issue 13): data files, config
files and every error `refine` reports; `-v` keeps the traceback."""

import json
import logging

import pytest
import yaml

from refine import cli
from refine.config import REPO_ROOT
from refine.data.jsonl import read_jsonl
from refine.eval.longbench import LongBenchFormatError, load_task, read_raw_jsonl
from refine.train.loop import NonFiniteLossError


def _raw_trec(**overrides) -> dict:
    record = {"input": "Q?", "context": "ctx", "answers": ["City"], "length": 7, "dataset": "trec",
              "language": "en", "all_classes": ["City", "Country"], "_id": "abc"}  # fmt: skip
    return {**record, **overrides}


def test_empty_longbench_task_file_stops_naming_the_file(tmp_path):
    (tmp_path / "trec.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"trec\.jsonl: no records for LongBench task 'trec'"):
        load_task(tmp_path, "trec")
    (tmp_path / "trec.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no records"):
        load_task(tmp_path, "trec")


def test_non_utf8_bytes_in_jsonl_name_the_file_and_record(tmp_path):
    good = json.dumps(_raw_trec()).encode()
    (tmp_path / "trec.jsonl").write_bytes(good + b"\n" + good.replace(b"ctx", b"c\xe9x") + b"\n")
    with pytest.raises(LongBenchFormatError, match=r"trec\.jsonl: record 1: field '<utf-8>'"):
        read_raw_jsonl(tmp_path / "trec.jsonl")
    (tmp_path / "items.jsonl").write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(ValueError, match=r"items\.jsonl: line 2 is not UTF-8"):
        read_jsonl(tmp_path / "items.jsonl")


def _run(argv, capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("refine:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_binary_config_file_is_one_line(tmp_path, capsys):
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    code, err = _run(["data", "--config", str(binary), "--out", str(tmp_path / "d")], capsys)
    assert code == 2
    assert "model.bin: not a text file" in _one_line(err)
    (tmp_path / "nul.yaml").write_bytes(b"seeds: [0]\x00\n")
    code, err = _run(["data", "--config", str(tmp_path / "nul.yaml"), "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "nul.yaml: not a text file" in _one_line(err)


def test_missing_config_and_bad_yaml_are_one_line(tmp_path, capsys):
    code, err = _run(["data", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path)], capsys)
    assert code == 2 and "none.yaml: config file not found" in _one_line(err)
    (tmp_path / "bad.yaml").write_text("seeds: [0\nmodels: {")
    code, err = _run(["data", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path)], capsys)
    assert code == 2 and "bad.yaml: not valid YAML" in _one_line(err)


def _config(tmp_path, **changes) -> str:
    cfg = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text())
    base = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    from refine.config import deep_merge

    cfg = deep_merge(deep_merge(base, cfg), {"results_dir": str(tmp_path / "results"), **changes})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_data_error_in_a_job_is_one_line_naming_file_and_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"text": "fine words"}\n{"text": "bad \xff byte"}\n')
    config = _config(tmp_path, data={"pretrain": {"num_docs": 4, "seq_len": 32},
                                     "midtrain": {"source": str(corpus), "num_docs": 2, "seq_len": 96}})  # fmt: skip
    code, err = _run(["data", "--config", config, "--out", str(tmp_path / "results" / "data")], capsys)
    assert code == 2
    assert "corpus.jsonl:2: not UTF-8" in _one_line(err)


@pytest.mark.parametrize(
    "error",
    [NonFiniteLossError("non-finite loss nan at optimizer step 3"), FileNotFoundError("x.npy: not found"),
     LongBenchFormatError("trec.jsonl", 4, "answers", "expected a non-empty str list")],
)  # fmt: skip
def test_user_errors_are_one_line_and_v_keeps_the_traceback(tmp_path, capsys, caplog, monkeypatch, error):
    def failing(args, cfg):
        raise error

    monkeypatch.setattr(cli, "_cmd_tracking", failing)
    config = _config(tmp_path)
    code, err = _run(["tracking", "--config", config], capsys)
    assert code == 2 and str(error).split(":")[0] in _one_line(err)
    with caplog.at_level(logging.ERROR, logger="refine"):
        code, err = _run(["-v", "tracking", "--config", config], capsys)
    assert code == 2 and any(r.exc_info for r in caplog.records), "-v logs the traceback"


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def buggy(args, cfg):
        raise ZeroDivisionError("a bug, not bad input")

    monkeypatch.setattr(cli, "_cmd_tracking", buggy)
    with pytest.raises(ZeroDivisionError):
        cli.main(["tracking", "--config", _config(tmp_path)])


def test_empty_qa_file_stops_naming_the_file(tmp_path):
    from refine.eval.data import qa_records
    from refine.study import validate_config

    (tmp_path / "qa.jsonl").write_text("")
    base = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    base["eval"]["qa"].update(source=str(tmp_path / "qa.jsonl"), train_source=str(tmp_path / "qa.jsonl"))
    cfg = validate_config(base, "x.yaml")
    with pytest.raises(ValueError, match=r"qa\.jsonl: no QA records \(empty file\), for eval\.qa\.source"):
        qa_records(cfg, None, "test")
