"""The rehearsal's assets load through the code paths of config/paper.yaml, and have the hub's formats.

One small build (module fixture) is checked asset by asset: the tokenizer through AutoTokenizer (Llama-2
ids, byte fallback, multi-token values, round trips), both checkpoints through `import_pretrained`
(the paper's import stage) with identical logits after the re-save, the SlimPajama JSONL through
`load_text_corpus` with the paper path's filter, LongBench through the official-JSONL reader, RULER-QA
through the authors'-format reader; plus the paper config accepting the manifest's values, idempotence
and determinism.
"""

import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open

from refine.config import deep_merge, read_config_file
from refine.data.real_corpus import load_text_corpus
from refine.data.ruler import count_tokens, make_niah_sampler
from refine.data.ruler_qa import read_qa_records
from refine.data.tokenizer import load_tokenizer
from refine.eval.longbench import PAPER_TASKS, find_task_file, load_longbench, read_raw_jsonl
from refine.rehearsal import RehearsalSizes, build_assets, qa_file_name
from refine.rehearsal.checkpoints import DELTA_NET_HUB_CONFIG, DELTA_NET_TINY
from refine.rehearsal.data import slimpajama_records
from refine.rehearsal.tokenizer import BYTE_TOKENS, train_llama2_tokenizer
from refine.study import check_sources, validate_config

REPO = Path(__file__).resolve().parent.parent
AUTHORS_QA = REPO.parent / "shared" / "data" / "ruler_qa" / "ruler_squadqa_delta_net_4096_200_test.parquet"
SIZES = RehearsalSizes(train_docs=20, validation_docs=8, longbench_records=4, qa_test_samples=4, qa_train_samples=6)
OFFICIAL_LONGBENCH_FIELDS = {"input", "context", "answers", "length", "dataset", "language", "all_classes", "_id"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal")
    manifest = build_assets(out, seed=0, sizes=SIZES)
    return out, manifest


@pytest.fixture(scope="module")
def tokenizer(assets):
    return load_tokenizer(assets[0] / "tokenizer")


def test_tokenizer_has_llama2_ids_and_adds_bos(assets, tokenizer):
    assert type(tokenizer).__name__ == "LlamaTokenizer"  # what tokenizer_class: LlamaTokenizer selects
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens(list(range(3, 259))) == list(BYTE_TOKENS)
    assert 2000 <= len(tokenizer) <= 4000 and len(tokenizer) == assets[1]["vocab_size"]
    ids = tokenizer("The grass is green.")["input_ids"]
    assert ids[0] == 1 and ids.count(1) == 1 and 2 not in ids  # BOS by default, no EOS
    hub_copy = load_tokenizer(assets[0] / "delta_net")  # tokenizer.path: the DeltaNet repo, as in paper.yaml
    assert hub_copy.get_vocab() == tokenizer.get_vocab()


def test_unseen_character_falls_back_to_bytes(tokenizer):
    text = "snow ☃ and ünïcode"
    assert "☃" not in "".join(tokenizer.get_vocab())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    snowman = [f"<0x{b:02X}>" for b in "☃".encode()]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert any(tokens[i : i + 3] == snowman for i in range(len(tokens)))
    assert tokenizer.decode(ids) == text


def test_uuids_numbers_and_ruler_words_span_several_tokens(tokenizer):
    def n_tokens(text):
        return count_tokens(tokenizer, text)

    assert all(n_tokens(str(uuid.UUID(int=i * 7919 + 12345, version=4))) >= 10 for i in range(20))
    for number in ("1234567", "9999999", "7050123"):  # Llama-2: a word-start piece, then one token per digit
        ids = tokenizer(number, add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids) == ["▁", *number]
    sampler = make_niah_sampler("niah_single_1", seed=3)  # RULER's own keys: wonderwords adjective-noun
    prompt, values, _, _ = sampler.render(0, 4)
    key = prompt.split("for ")[-1].split(" mentioned")[0]
    assert "-" in key and n_tokens(key) >= 3 and n_tokens(values[0]) == 8


@pytest.mark.parametrize("text", ["The special magic number for ruthless-overcoat is: 1234567.",
                                  "def f(x):\n\treturn x + 1\n", "a  b\n\nc", "Größe 42 – naïve café ☃"])  # fmt: skip
def test_decode_encode_round_trips(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_every_asset_text_round_trips_without_unk(assets, tokenizer):
    out = assets[0]
    texts = [json.loads(line)["text"] for line in (out / "slimpajama" / "train.jsonl").read_text().splitlines()]
    texts += [r.prompt for records in load_longbench(out / "longbench", PAPER_TASKS).values() for r in records]
    texts += [r["input"] for r in read_qa_records(out / "ruler_qa" / qa_file_name(512, SIZES.qa_test_samples, "test"))]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids, skip_special_tokens=True) == text


def test_delta_net_in_hub_layout_imports_like_the_hub_checkpoint(assets, tokenizer, tmp_path):
    from refine.train.run import import_pretrained

    out = assets[0] / "delta_net"
    hub_files = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
                 "tokenizer.json", "tokenizer_config.json"]  # the hub repo's, less tokenizer.model
    assert sorted(p.name for p in out.iterdir()) == hub_files
    config = json.loads((out / "config.json").read_text())
    assert set(config) == set(DELTA_NET_HUB_CONFIG)
    changed = {k for k in config if config[k] != DELTA_NET_HUB_CONFIG[k]}
    assert changed == {*DELTA_NET_TINY, "vocab_size"} and config["vocab_size"] == len(tokenizer)
    assert json.loads((out / "generation_config.json").read_text())["pad_token_id"] == 2
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
        stored = {k: f.get_tensor(k) for k in f.keys()}
    model = _import(tmp_path, "deltanet", str(out), "hf", import_pretrained)
    assert type(model).__name__ == "DeltaNetForCausalLM" and model.config.hidden_size == 64
    assert all(torch.equal(model.state_dict()[k].to(torch.bfloat16), v) for k, v in stored.items())
    _same_logits_after_resave(model, tmp_path, tokenizer)


def test_lact_in_official_layout_imports_like_the_release(assets, tokenizer, tmp_path):
    from refine.train.run import import_pretrained

    out = assets[0] / "lact"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "lact_swiglu" and config["vocab_size"] == len(tokenizer)
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
        stored = {k: f.get_tensor(k) for k in f.keys()}
    model = _import(tmp_path, "lact", str(out), "official_lact", import_pretrained)
    assert type(model).__name__ == "LaCTForCausalLM" and model.config.lact_chunk_size == 128
    assert set(stored) <= set(model.state_dict())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())  # identity name mapping
    _same_logits_after_resave(model, tmp_path, tokenizer)


def _import(tmp_path, name, pretrained, fmt, import_pretrained):
    """Run the paper's import stage (`refine train --stage pretrain` of a model with a checkpoint)."""
    results = tmp_path / "results"
    load_tokenizer(Path(pretrained).parent / "tokenizer").save_pretrained(str(results / "data" / "tokenizer"))
    entry = {"pretrained": pretrained, "checkpoint_format": fmt}
    cfg = {"results_dir": str(results), "study": "rehearsal", "models": {name: entry}}
    final = import_pretrained(cfg, name, tmp_path / "base")
    assert final["pretrained"] == pretrained and (tmp_path / "base" / "model" / "tokenizer.json").is_file()
    from refine.models.lact_convert import load_official_lact
    from refine.models.registry import load_model

    return load_official_lact(pretrained) if fmt == "official_lact" else load_model(pretrained)


def _same_logits_after_resave(model, tmp_path, tokenizer):
    from refine.models.registry import load_model

    resaved = load_model(tmp_path / "base" / "model")  # what every later stage loads
    ids = torch.tensor([tokenizer("The grass is green. " * 40)["input_ids"][:150]])
    with torch.no_grad():
        expected = model.float()(ids).logits
        got = resaved.float()(ids).logits
    assert expected.shape == (1, 150, len(tokenizer)) and torch.isfinite(expected).all()
    assert torch.equal(got, expected)


def test_slimpajama_schema_and_the_paper_filter(assets, tokenizer):
    path = assets[0] / "slimpajama" / "train.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == SIZES.train_docs
    for i, record in enumerate(records):
        assert set(record) == {"text", "meta", "__index_level_0__"} and record["__index_level_0__"] == i
        assert list(record["meta"]) == ["redpajama_set_name"]
        assert record["meta"]["redpajama_set_name"].startswith("RedPajama")
    lengths = [len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in records]
    n_long = sum(n >= SIZES.seq_len for n in lengths)
    assert n_long == round(SIZES.train_docs * SIZES.long_fraction) and n_long < len(records)
    kept = load_text_corpus(str(path), tokenizer, min_tokens=SIZES.seq_len, max_docs=10_000, max_tokens=SIZES.seq_len)
    assert len(kept) == n_long  # the paper path's filter keeps exactly the long documents
    long_texts = [r["text"] for r, n in zip(records, lengths, strict=True) if n >= SIZES.seq_len]
    assert all(text.startswith(doc) for doc, text in zip(kept, long_texts, strict=True))
    held_out = load_text_corpus(str(assets[0] / "slimpajama" / "validation.jsonl"), tokenizer, SIZES.seq_len, 100)
    assert held_out and not set(held_out) & set(long_texts)


def test_longbench_official_schema_through_the_raw_reader(assets, tokenizer):
    directory = assets[0] / "longbench"
    suite = load_longbench(directory, PAPER_TASKS)
    prompt_lengths = []
    for task in PAPER_TASKS:
        path = find_task_file(directory, task)
        assert path.name == f"{task}.jsonl"
        raws = [json.loads(line) for line in path.read_text().splitlines()]
        assert all(set(raw) == OFFICIAL_LONGBENCH_FIELDS and raw["dataset"] == task for raw in raws)
        assert len(read_raw_jsonl(path)) == len(suite[task]) == SIZES.longbench_records
        prompt_lengths += [len(tokenizer(r.prompt)["input_ids"]) for r in suite[task]]
    assert min(prompt_lengths) < 512 < max(prompt_lengths)  # some fit a 512-token model, some are cut


def test_ruler_qa_parquet_in_the_authors_format(assets, tokenizer):
    for length in SIZES.qa_lengths:
        for split, n in (("test", SIZES.qa_test_samples), ("train", SIZES.qa_train_samples)):
            path = assets[0] / "ruler_qa" / qa_file_name(length, n, split)
            schema = pq.read_schema(path)
            if AUTHORS_QA.is_file():  # the authors' file, where this machine has it
                assert schema.remove_metadata() == pq.read_schema(AUTHORS_QA).remove_metadata()
            assert schema.names == ["index", "prompt", "answer", "prompt_length", "max_answer_length",
                                    "total_length", "max_seq_length", "task"]  # fmt: skip
            records = read_qa_records(path)
            assert len(records) == n
            for rec, row in zip(records, pq.read_table(path).to_pylist(), strict=True):
                assert rec["prompt_length"] == count_tokens(tokenizer, rec["input"]) <= length - 32
                assert row["max_seq_length"] == length and row["task"] == "ruler_squadqa"
                assert rec["input"].startswith("Answer the question based on the given passages.")
                assert rec["input"].endswith("Answer:") and rec["outputs"][0] in rec["input"]


def _paper_config_on_assets(manifest: dict, results: Path) -> dict:
    paper = read_config_file(REPO / "config" / "paper.yaml")
    cfg = validate_config(deep_merge(read_config_file(REPO / "config" / "config.yaml"), paper), "paper")
    for key, value in manifest["config"].items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        assert leaf in node, key  # every key exists in the (validated) paper config: only values change
        node[leaf] = value
    cfg["device"], cfg["results_dir"] = "cpu", str(results)
    return validate_config(cfg, "paper+rehearsal")


def test_paper_data_stages_run_on_the_assets(assets, tmp_path):
    """`refine data` and `refine eval-data` of config/paper.yaml with only the manifest's values (and
    sample counts) changed: the paper's tokenizer import, corpus filter, token datasets and QA/LongBench
    sources all accept the assets."""
    from refine.data.build import build_data
    from refine.eval.data import build_eval_data

    cfg = _paper_config_on_assets(assets[1], tmp_path / "results")
    check_sources(cfg)
    n_long = round(SIZES.train_docs * SIZES.long_fraction)
    cfg["data"]["midtrain"]["num_docs"], cfg["data"]["heldout"]["num_docs"] = n_long, 4
    cfg["eval"]["niah"].update(lengths=[512], samples=1, variants=["niah_single_1", "niah_multikey_3"])
    data = build_data(cfg, tmp_path / "data")
    assert data["midtrain"]["num_docs"] == n_long and data["midtrain"]["tokens"] == n_long * SIZES.seq_len
    assert data["midtrain"]["pad_id"] == 2
    summary = build_eval_data(cfg, tmp_path / "data" / "tokenizer", tmp_path / "data" / "eval")
    assert summary["qa_test"] == SIZES.qa_test_samples and summary["qa_train"] == SIZES.qa_train_samples
    assert summary["niah"] == 2


def test_rebuild_skips_and_refuses_other_settings(assets):
    out, manifest = assets
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert build_assets(out, seed=0, sizes=SIZES) == manifest
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert not list(out.glob(".*.tmp"))
    assert sorted(p.name for p in (out / "lact").iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(FileExistsError, match="slimpajama"):
        build_assets(out, seed=0, sizes=RehearsalSizes(**{**SIZES.__dict__, "train_docs": 21}))


def test_same_seed_same_assets(tokenizer):
    texts = ["The grass is green. " * 40, "ruthless-overcoat 1234567 " * 30, "abc def ghi jkl " * 50]
    first, second = train_llama2_tokenizer(texts, 600), train_llama2_tokenizer(texts, 600)
    assert first.to_str() == second.to_str()
    docs = [slimpajama_records(6, 64, 0.5, tokenizer, seed=5, essay_dir=None) for _ in range(2)]
    assert docs[0] == docs[1] != slimpajama_records(6, 64, 0.5, tokenizer, seed=6, essay_dir=None)
