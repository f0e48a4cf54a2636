"""`refine bench --quick`: every measurement writes its rows with every column, finite values, threads
and commit; the sizes come from the config's `bench:` section (issue 10: they were ignored); the decoder
from states gives the tokens `model.generate` gives (no timing asserts)."""

import argparse
import csv
import math

import pytest
import torch

from refine.bench import COLUMNS, MEASUREMENTS, NUMERIC, BenchConfig, add_arguments, config_from_args
from refine.bench.run import run_bench, trl_available
from refine.config import ConfigError

VARIANTS = {
    "update": ("ntp", "ntp_mb4", "refine_onepass", "refine_onepass_mb4", "refine_onepass_mb4_own", "refine_reencode"),
    "trl": ("trl_grpo", "refine_onepass", "ntp"),
    "decode": ("from_states", "greedy_generate", "hf_generate"),
    "vs_seq_len": ("ntp", "refine_onepass", "refine_reencode"),
    "vs_positions": ("ntp", "refine_onepass", "refine_reencode"),
}


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "update_cost.csv"
    bench = config_from_args(_args("--quick", "--archs", "delta_net"))
    rows = run_bench(bench, out)
    with out.open() as f:
        return rows, list(csv.DictReader(f)), bench


def test_quick_bench_writes_every_measurement(quick_rows):
    rows, read, bench = quick_rows
    assert tuple(read[0].keys()) == COLUMNS
    expected = [m for m in MEASUREMENTS if m != "trl" or trl_available()]
    assert list(dict.fromkeys(r["measurement"] for r in read)) == expected
    for measurement in expected:
        variants = [r["variant"] for r in read if r["measurement"] == measurement]
        points = {"vs_seq_len": len(bench.scaling_seq_lens), "vs_positions": len(bench.scaling_positions)}
        assert variants == list(VARIANTS[measurement]) * points.get(measurement, 1), measurement
    for row in read:
        for column in NUMERIC:
            assert math.isfinite(float(row[column])), column
        assert float(row["median_s"]) > 0
        assert int(row["threads"]) == torch.get_num_threads()
        assert row["commit"]
        assert float(row["other_cpu_cores"]) >= 0


def test_ratios_are_against_the_named_variant_of_the_same_run(quick_rows):
    rows, _, _ = quick_rows
    for row in rows:
        same = [r for r in rows if r["measurement"] == row["measurement"] and r["seq_len"] == row["seq_len"]
                and r["arch"] == row["arch"] and r["batch_size"] == row["batch_size"]
                and (r["num_positions"] == row["num_positions"] or row["measurement"] != "vs_positions")]  # fmt: skip
        base = next(r for r in same if row["ratio_to"].startswith(r["variant"]))
        if row["measurement"] == "decode":  # a speed-up: base time / this time
            assert row["ratio"] == pytest.approx(base["median_s"] / row["median_s"])
        else:
            assert row["ratio"] == pytest.approx(row["median_s"] / base["median_s"])


def test_sizes_come_from_the_config_section_then_the_flags():
    cfg = {"bench": {"seq_len": 512, "batch_size": 8, "repeats": 2, "measurements": ["update"]}}
    bench = config_from_args(_args("--repeats", "4"), cfg)
    assert (bench.seq_len, bench.batch_size, bench.repeats, bench.measurements) == (512, 8, 4, ("update",))
    assert config_from_args(_args(), {}) == BenchConfig()  # defaults: the dataclass's


def test_a_bad_bench_value_names_its_key():
    with pytest.raises(ConfigError, match=r"bench: unknown key\(s\) \['seqlen'\]"):
        config_from_args(_args(), {"bench": {"seqlen": 4}})
    with pytest.raises(ConfigError, match="mini_batches"):
        config_from_args(_args(), {"bench": {"batch_size": 6, "mini_batches": 4}})


def test_the_rule_passes_a_config_whose_bench_section_the_command_reads(tmp_path):
    import yaml

    from refine.cli import build_parser

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"bench": {"seq_len": 256, "threads": 1}}))
    args = build_parser().parse_args(["bench", "--config", str(config), "--out", str(tmp_path / "x.csv")])
    bench = config_from_args(args, yaml.safe_load(config.read_text()))
    assert (bench.seq_len, bench.threads) == (256, 1)


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_decoding_from_states_gives_generate_s_tokens(arch):
    from refine.bench import QUICK_OVERRIDES
    from refine.bench.decode import decode_from_states, hf_generate
    from refine.models.registry import build_model
    from refine.rl.config import RefineConfig

    torch.manual_seed(0)
    model = build_model(arch, 50, QUICK_OVERRIDES[arch]).eval()
    ids = torch.randint(0, 50, (2, 48))
    starts = torch.tensor([[9, 30], [17, 41]])
    cfg = RefineConfig(num_positions=2, rollout_len=6, temperature=0.0, margin=0)  # EOS barred, as min_new_tokens
    ours = decode_from_states(model, ids, starts, cfg)
    prompts = [ids[b, :s] for b in range(2) for s in starts[b].tolist()]
    with torch.no_grad():
        theirs = torch.stack([hf_generate(model, [p], 6, 0)[0] for p in prompts])  # one prompt at a time: no padding
    assert torch.equal(ours, theirs)
    from refine.bench.trl_grpo import ids_to_text, word_tokenizer
    from refine.eval.generate import greedy_generate

    tok = word_tokenizer(50, model.config.eos_token_id)
    texts = greedy_generate(model, tok, [ids_to_text(p) for p in prompts], 6, batch_size=4, min_new_tokens=6)
    assert [tok.convert_tokens_to_ids(t.split()) for t in texts] == theirs.tolist()  # left-padded batch of 4


def test_the_profiler_times_every_phase_of_the_real_update():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "tools" / "profile_refine_update.py"
    spec = importlib.util.spec_from_file_location("profile_refine_update", path)
    profiler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profiler)
    import refine.train.refine as refine_module

    before = refine_module.rollout_from_states
    phases = profiler.main(["--arch", "delta_net", "--seq-len", "64", "--repeats", "1", "--mini-batches", "2"])
    assert refine_module.rollout_from_states is before  # the wrappers are removed again
    assert set(profiler.PHASES.values()) <= set(phases)  # each phase ran (2 mini-batches: a score pass too)
    assert all(v > 0 for v in phases.values())
    assert sum(v for k, v in phases.items() if k not in ("ntp", "refine")) < phases["refine"]


def test_the_word_tokenizer_gives_trl_exactly_the_prompt_ids():
    from refine.bench.trl_grpo import ids_to_text, word_tokenizer

    tok = word_tokenizer(300, eos_id=2)
    ids = [2, 23, 12, 200, 299, 2, 22, 0, 1]  # the EOS "w2_" must not cut "w23_", "w200_", "w22_"
    assert tok.encode(ids_to_text(ids)) == ids
    assert tok.decode(ids) == ids_to_text(ids)
    assert tok.convert_tokens_to_ids(tok.decode(ids, skip_special_tokens=True).split()) == [i for i in ids if i != 2]
