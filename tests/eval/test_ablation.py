"""The fast-weight ablation (`refine.eval.ablation`): what "fast-weight updates off" computes, and its table."""

import csv
import json

import pytest
import torch
import yaml

from refine.config import REPO_ROOT, deep_merge
from refine.eval.ablation import ablation_rows, fast_weights_frozen, main
from refine.models.lact import LaCTConfig, LaCTForCausalLM

WINDOW, CHUNK, LAYERS, T = 8, 8, 2, 40


def _tiny(chunk: int = CHUNK, **overrides) -> LaCTForCausalLM:
    cfg = dict(vocab_size=50, hidden_size=32, num_hidden_layers=LAYERS, num_attn_heads=2, num_lact_heads=2,
               window_size=WINDOW, lact_chunk_size=chunk, use_momentum=True, use_muon=True, hidden_ratio=2)  # fmt: skip
    model = LaCTForCausalLM(LaCTConfig(**{**cfg, **overrides})).eval()
    with torch.no_grad():  # learning rates of order 1, so that every update visibly moves the fast weights
        for layer in model.model.layers:
            layer.attn.lr_proj.bias.fill_(7.0)
    return model


def _same_weights(model: LaCTForCausalLM, **config) -> LaCTForCausalLM:
    other = LaCTForCausalLM(LaCTConfig(**{**model.config.to_dict(), **config})).eval()
    other.load_state_dict(model.state_dict())
    return other


@torch.no_grad()
@pytest.mark.parametrize("muon", [True, False])
def test_frozen_equals_the_same_weights_with_one_chunk_longer_than_the_sequence(muon):
    """Off = no token ever reads a written fast weight: exactly what a chunk longer than the sequence
    gives (apply-then-update: the first chunk reads the initial weights), computed by the update path."""
    model = _tiny(use_muon=muon)
    ids = torch.randint(0, 50, (3, T))
    on = model(ids).logits
    with fast_weights_frozen(model):
        off = model(ids).logits
    one_chunk = _same_weights(model, lact_chunk_size=2 * T)(ids).logits
    torch.testing.assert_close(off, one_chunk, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(off[:, :CHUNK], on[:, :CHUNK], rtol=1e-5, atol=1e-5)  # first chunk: no write read yet
    assert (off[:, CHUNK:] - on[:, CHUNK:]).abs().amax() > 1e-4  # after it, the writes matter (fp error < 1e-6)
    torch.testing.assert_close(model(ids).logits, on)  # restored on exit


@torch.no_grad()
def test_frozen_model_sees_only_its_stacked_windows():
    """Off, a token's logits depend on at most LAYERS * (WINDOW - 1) tokens back; on, the fast weights
    carry the first token to the end of the sequence."""
    model = _tiny()
    ids = torch.randint(0, 50, (2, T))
    changed = ids.clone()
    changed[:, 0] = (ids[:, 0] + 1) % 50
    reach = LAYERS * (WINDOW - 1)
    assert (model(ids).logits[:, reach + 1 :] - model(changed).logits[:, reach + 1 :]).abs().amax() > 1e-3
    with fast_weights_frozen(model):
        far, far_changed = model(ids).logits[:, reach + 1 :], model(changed).logits[:, reach + 1 :]
        near_delta = (model(ids).logits[:, reach] - model(changed).logits[:, reach]).abs().amax()
    torch.testing.assert_close(far, far_changed, rtol=0, atol=1e-7)
    assert near_delta > 1e-5  # the bound is tight: the token at distance LAYERS * (WINDOW - 1) still sees it


@torch.no_grad()
def test_frozen_cached_decoding_equals_the_frozen_full_forward():
    """Greedy evaluation decodes with the cache: off, prefill + one token at a time gives the logits
    of one frozen forward over the whole sequence (rows at different positions, left padding)."""
    model = _tiny()
    ids = torch.randint(0, 50, (2, T))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # row 1 is left-padded by 3
    with fast_weights_frozen(model):
        full = model(ids, attention_mask=mask).logits
        out = model(ids[:, :21], attention_mask=mask[:, :21], use_cache=True)
        steps = [out.logits[:, -1]]
        for t in range(21, T):
            out = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], past_key_values=out.past_key_values,
                        use_cache=True)  # fmt: skip
            steps.append(out.logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 20:], rtol=1e-4, atol=1e-4)


def test_the_switch_is_restored_after_an_error_and_refuses_other_models():
    model = _tiny()
    with pytest.raises(RuntimeError), fast_weights_frozen(model):
        raise RuntimeError("inside")
    assert all(layer.attn.update_fast_weights for layer in model.model.layers)
    with pytest.raises(ValueError, match="no LaCT layer"), fast_weights_frozen(torch.nn.Linear(2, 2)):
        pass


def test_rows_give_on_off_and_their_difference_per_variant_and_group():
    record = {"window_size": 64, "chunk_size": 64, "num_layers": 2,
              "on": {"niah_single_1/len64/score": 100.0, "niah_single_1/len256/score": 80.0,
                     "niah_single_2/len256/score": 60.0, "niah_single_1/score": 90.0},
              "off": {"niah_single_1/len64/score": 100.0, "niah_single_1/len256/score": 10.0,
                      "niah_single_2/len256/score": 30.0, "niah_single_1/score": 55.0}}  # fmt: skip
    rows = {(r["variant"], r["length"]): r for r in ablation_rows(record, "lact", "base")}
    assert set(rows) == {("niah_single_1", 64), ("niah_single_1", 256), ("niah_single_2", 256), ("S", 64), ("S", 256)}
    assert rows[("niah_single_1", 256)]["difference"] == 70.0
    assert rows[("S", 256)]["on"] == 70.0 and rows[("S", 256)]["off"] == 20.0 and rows[("S", 256)]["difference"] == 50.0
    assert rows[("S", 64)]["beyond_window"] is False and rows[("S", 256)]["beyond_window"] is True
    assert rows[("S", 256)]["beyond_receptive_field"] is True and rows[("S", 64)]["model"] == "lact"


def test_command_writes_the_table_for_a_saved_model(tmp_path):
    """`python -m refine.eval.ablation` on a saved tiny LaCT and the study's NIAH items (2 lengths)."""
    from refine.data.corpus import CorpusConfig, vocabulary_texts
    from refine.data.tokenizer import build_word_tokenizer
    from refine.eval.data import niah_records
    from refine.study import load_config

    results = tmp_path / "results"
    niah = {"variants": ["niah_single_1", "niah_single_2"], "lengths": [48, 96], "samples": 2}
    raw = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    raw = deep_merge(raw, {"results_dir": str(results), "threads": 1, "eval": {"niah": niah, "batch_size": 4}})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(config_path)
    model_dir = results / "models" / "lact" / "base" / "model"
    tokenizer = build_word_tokenizer(vocabulary_texts(CorpusConfig()), model_dir)
    _tiny(vocab_size=len(tokenizer), window_size=16, lact_chunk_size=16).save_pretrained(model_dir)
    (results / "data" / "eval").mkdir(parents=True)
    with (results / "data" / "eval" / "niah.jsonl").open("w") as f:
        for rec in niah_records(cfg, tokenizer):
            f.write(json.dumps(rec) + "\n")
    out = results / "ablation_table.csv"
    main(["--config", str(config_path), "--model-dir", str(model_dir), "--variants", "niah_single_1",
          "--json-dir", str(results / "ablation"), "--out", str(out)])  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert {(r["variant"], r["length"]) for r in rows} == {(v, n) for v in ("niah_single_1", "S") for n in ("48", "96")}
    for r in rows:
        assert 0 <= float(r["on"]) <= 100 and 0 <= float(r["off"]) <= 100
        assert float(r["difference"]) == pytest.approx(float(r["on"]) - float(r["off"]), abs=0.011)
        assert r["model"] == "lact" and r["run"] == "base" and r["window_size"] == "16"
    assert (results / "ablation" / "lact-base.json").is_file()
