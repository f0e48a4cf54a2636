"""The suite registry: a suite defined in one module flows through `refine eval` and `refine report` with no
other edit; the three shipped suites keep their names, files and metrics; NIAH heatmaps share one colour scale."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from jinja2 import Environment
from snakemake.iocontainers import Params
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from refine import names
from refine.config import REPO_ROOT, deep_merge
from refine.eval import run as run_module
from refine.eval.suites import SUITES, Item, ReportOutput, Suite, get_suite, load_items, register, score_item
from refine.report import figures
from refine.report.cli import report_names, write_report
from refine.report.tables import seed_table

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


@pytest.fixture
def registry(monkeypatch):
    """The registry, restored after the test (a suite registered in a test does not leak)."""
    for name, suite in list(SUITES.items()):
        monkeypatch.setitem(SUITES, name, suite)
    yield SUITES
    for name in [n for n in SUITES if n not in names.SUITES]:
        del SUITES[name]


def _toy_suite():
    """A whole new suite, as a new module would define it: items, scorer, table; nothing else is edited."""

    @register
    class Toy(Suite):
        name = "toy"
        data_files = ("toy.jsonl",)
        partial_credit = True
        outputs = (ReportOutput("table", "toy_table.csv", "Tables", "Toy accuracy per group."),)

        def load_items(self, cfg):
            path = self.data_dir(cfg) / "toy.jsonl"
            return [Item(id=r["id"], prompt=r["prompt"], answers=r["answers"], max_new_tokens=2, group=r["group"],
                         length=r["length"]) for r in map(json.loads, path.read_text().splitlines())]  # fmt: skip

        def score(self, item, prediction):
            return float(prediction.split()[:1] == item.answers[0].split()[:1])

        def table(self, runs, cfg):
            groups = [{k.split("/")[0]: v for k, v in r["metrics"].items() if k.count("/") == 1} for r in runs]
            return seed_table([{"model": r["model"], "method": r["method"], "seed": r["seed"], **g}
                               for r, g in zip(runs, groups, strict=True)])  # fmt: skip

    return Toy


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A word-level tokenizer (BOS prepended) and a tiny random Llama, saved as .../<model>/<run>/model."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="</s>")  # fmt: skip
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)  # fmt: skip
    path = tmp_path_factory.mktemp("toy") / "tiny" / "base" / "model"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _study(tmp_path) -> dict:
    cfg = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    return deep_merge(cfg, {"results_dir": str(tmp_path / "results"), "device": "cpu", "threads": 1})


def test_a_new_suite_flows_through_eval_and_report_without_other_edits(registry, tmp_path, model_dir, monkeypatch):
    _toy_suite()
    assert "toy" in report_names() and get_suite("toy").name == "toy"
    cfg = _study(tmp_path)
    data = tmp_path / "results" / "data" / "eval"
    data.mkdir(parents=True)
    records = [{"id": f"{g}/{n}/{i}", "prompt": " ".join(WORDS[i : i + n]), "answers": [WORDS[(i + n) % 8]],
                "group": g, "length": n} for g in ("a", "b") for n in (2, 3) for i in range(3)]  # fmt: skip
    (data / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    items = load_items(cfg, "toy")
    assert [i.id for i in items] == [r["id"] for r in records]
    assert score_item("toy", items[0], f"{items[0].answers[0]} golf") == 1.0
    assert score_item("toy", items[0], "nothing") == 0.0

    written = {}

    def fake_write(out_dir, suite, ttt, model_dir, items, rows, metrics, cfg, *args):
        written.update(suite=suite, items=items, rows=rows, metrics=metrics)
        out = tmp_path / "eval" / suite / "tiny" / "base" / f"ttt-{ttt}"
        out.mkdir(parents=True)
        scores = {"suite": suite, "ttt": ttt, "model": "tiny", "run": "base", "metrics": metrics}
        (out / "scores.json").write_text(json.dumps(scores))

    monkeypatch.setattr(run_module, "_write", fake_write)
    metrics = run_module.run_eval(cfg, "toy", model_dir, tmp_path / "unused")
    rows = written["rows"]
    assert len(rows) == len(records)
    for item, row in zip(written["items"], rows, strict=True):  # the suite's scorer, and partial credit
        assert row["score"] == score_item("toy", item, row["prediction"])
        assert {"first_token_acc", "char_acc", "answer_logprob"} <= set(row)
    for group in ("a", "b"):  # the default aggregation: ×100 per (group, length), mean over lengths
        per_len = []
        for n in (2, 3):
            cell = [r for i, r in zip(written["items"], rows, strict=True) if (i.group, i.length) == (group, n)]
            assert metrics[f"{group}/len{n}/score"] == pytest.approx(100 * np.mean([r["score"] for r in cell]))
            logprob = np.mean([r["answer_logprob"] for r in cell])
            assert metrics[f"{group}/len{n}/answer_logprob"] == pytest.approx(logprob)
            per_len.append(metrics[f"{group}/len{n}/score"])
        assert metrics[f"{group}/score"] == pytest.approx(np.mean(per_len))

    out = tmp_path / "report" / "toy_table.csv"
    write_report(cfg, "toy", [str(tmp_path / "eval/toy/tiny/base/ttt-none/scores.json")], [str(out)])
    table = pd.read_csv(out)
    assert table.loc[0, "a"] == pytest.approx(metrics["a/score"], rel=1e-5)  # the CSV keeps 6 digits
    assert table.loc[0, "n_seeds"] == 1
    with pytest.raises(ValueError, match="expected 1 --out"):
        write_report(cfg, "toy", [], [str(out), str(out)])


def test_registry_names_match_the_name_list_and_keep_their_files():
    assert tuple(SUITES) == names.SUITES
    assert {"ntp", "curves"} <= set(report_names()) and report_names()[-len(names.SUITES) :] == names.SUITES
    paths = {name: [o.path for o in suite.outputs] for name, suite in SUITES.items()}
    assert paths == {  # README and the DAG tests name these files
        "niah": ["niah_table.csv", "figures/niah_heatmaps.png", "figures/niah_bars.png"],
        "qa": ["qa_table.csv", "figures/qa_bars.png"],
        "longbench": ["longbench_table.csv", "figures/longbench_bars.png"],
    }
    env = Environment(trim_blocks=True, lstrip_blocks=True)  # as `snakemake --report` renders captions
    for suite in SUITES.values():  # each output's caption file shows the suite's caption (the rule's params)
        params = Params(fromdict={"config": "c.yaml", "captions": {out.key: out.caption for out in suite.outputs}})
        for out in suite.outputs:
            template = (REPO_ROOT / "workflow" / "report" / f"suite_{out.key}.rst").read_text()
            assert env.from_string(template).render(snakemake=SimpleNamespace(params=params)).strip() == out.caption
    assert {n: s.partial_credit for n, s in SUITES.items()} == {"niah": True, "qa": True, "longbench": False}
    assert {n: s.ttt_runs for n, s in SUITES.items()} == {"niah": (), "qa": ("post-nested_refine",),
                                                         "longbench": ("mid-refine",)}  # fmt: skip


def test_registering_a_second_suite_under_a_taken_name_fails(registry):
    with pytest.raises(ValueError, match="registered twice"):

        @register
        class OtherNIAH(Suite):
            name = "niah"
            outputs = (ReportOutput("table", "x.csv", "Tables", "x"),)

    with pytest.raises(ValueError, match="suite: expected one of niah, qa, longbench"):
        get_suite("nope")


def _niah_item(variant: str, length: int, depth: float, index: int) -> Item:
    return Item(id=f"{variant}/{length}/{index}", prompt="", answers=["42"], max_new_tokens=4, group=variant,
                length=length, depth=depth)  # fmt: skip


def test_niah_aggregate_is_the_mean_per_variant_and_length():
    niah = get_suite("niah")
    items = [_niah_item("niah_single_1", n, 50.0, i) for n in (64, 128) for i in range(2)]
    rows = [{"score": s, "first_token_acc": s, "char_acc": 0.5, "answer_logprob": -1.0 * s} for s in (1, 0, 1, 1)]
    m = niah.aggregate(items, rows)
    assert m["niah_single_1/len64/score"] == 50.0 and m["niah_single_1/len128/score"] == 100.0
    assert m["niah_single_1/score"] == 75.0 and m["niah_single_1/len64/char_acc"] == 50.0
    assert m["niah_single_1/len128/answer_logprob"] == -1.0  # log-probabilities are not scaled
    assert list(m)[:4] == [f"niah_single_1/len64/{k}" for k in ("score", "first_token_acc", "char_acc",
                                                                  "answer_logprob")]  # fmt: skip
    lb = get_suite("longbench")
    lb_items = [Item(id=f"trec/{i}", prompt="", answers=["Abbreviation"], max_new_tokens=4, group="trec",
                     all_classes=["Abbreviation", "Animal"]) for i in range(2)]  # fmt: skip
    lb_rows = [{"prediction": "Abbreviation", "score": 1.0}, {"prediction": "Animal", "score": 0.0}]
    assert lb.aggregate(lb_items, lb_rows) == {"trec/score": 50.0, "avg/score": 50.0}


def test_heatmap_panels_share_one_colour_scale():
    grids = {"low": np.array([[0.0, 10.0], [5.0, np.nan]]), "high": np.array([[90.0, 100.0], [95.0, 99.0]])}
    fig = figures.heatmap_figure(grids, ["64", "128"], ["0", "50"], label="accuracy (%)")
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 2
    assert all(im.get_clim() == (0.0, 100.0) for im in images)  # not each panel's own min..max
    assert images[0].norm is images[1].norm
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1 and colorbars[0].get_ylim() == (0.0, 100.0)


def test_niah_report_writes_table_heatmaps_and_bars(tmp_path):
    cfg = _study(tmp_path)
    inputs = []
    for method, score in (("mid-sft-s0", 0.0), ("mid-refine-s0", 1.0)):
        out = tmp_path / "eval" / "niah" / "tiny" / method / "ttt-none"
        out.mkdir(parents=True)
        items = [_niah_item("niah_single_1", n, d, i) for n in (64, 128) for i, d in enumerate((10.0, 90.0))]
        rows = [{"prediction": "", "score": score, "first_token_acc": score, "char_acc": score, "answer_logprob": 0.0}
                for _ in items]  # fmt: skip
        metrics = get_suite("niah").aggregate(items, rows)
        with (out / "predictions.jsonl").open("w") as f:
            for item, row in zip(items, rows, strict=True):
                f.write(json.dumps({"id": item.id, "length": item.length, "depth": item.depth, **row}) + "\n")
        scores = {"suite": "niah", "ttt": "none", "model": "tiny", "run": method, "metrics": metrics}
        (out / "scores.json").write_text(json.dumps(scores))
        inputs.append(str(out / "scores.json"))
    outs = [str(tmp_path / p) for p in ("niah_table.csv", "figures/niah_heatmaps.png", "figures/niah_bars.png")]
    write_report(cfg, "niah", inputs, outs)
    table = pd.read_csv(outs[0])
    assert dict(zip(table["method"], table["S_mean"], strict=True)) == {"mid-sft": 0.0, "mid-refine": 100.0}
    assert {"S@64", "S@128", "S_first_token_acc", "S_char_acc", "S_answer_logprob"} <= set(table.columns)
    for path in outs[1:]:
        assert (tmp_path / path).stat().st_size > 1000
