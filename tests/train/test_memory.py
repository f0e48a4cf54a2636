"""The memory estimate: its arithmetic on a tiny Llama (sizes counted independently here), FSDP
sharding and checkpointing shrink what they should, and a run that will not fit logs a warning."""

import logging

import pytest
import torch
from test_loop import tiny_llama

import refine.train.memory as memory
from refine.train.config import TrainConfig
from refine.train.memory import GIB, activation_elements, estimate_memory, log_memory_estimate

D, F, LAYERS, VOCAB = 32, 64, 2, 64  # tiny_llama's shape
SEQ = 16384


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_ddp_arithmetic_on_a_tiny_llama():
    model = tiny_llama()
    n = param_count(model)
    est = estimate_memory(model, TrainConfig(batch_size=8, bf16=True), SEQ, world_size=2, strategy="ddp")
    tokens = 4 * SEQ  # 8 rows over 2 processes
    assert est["num_params"] == n and est["tokens"] == tokens
    assert est["params"] == est["grads"] == est["comm_buffers"] == 4 * n  # fp32, DDP buckets
    assert est["optimizer"] == 8 * n
    assert est["activations"] == tokens * 2 * LAYERS * (10 * D + 4 * F)
    assert est["logits"] == 4 * 1024 * VOCAB * (2 + 8)  # one chunk of the chunked NTP loss per row
    whole = estimate_memory(model, TrainConfig(batch_size=8), SEQ, world_size=2, strategy="ddp", logits_chunk=None)
    assert whole["logits"] == tokens * VOCAB * (2 + 8)
    parts = ("params", "grads", "optimizer", "comm_buffers", "activations", "logits")
    assert est["total"] == sum(est[k] for k in parts)


def test_single_process_has_no_communication_buffers_and_fp32_activations():
    model = tiny_llama()
    est = estimate_memory(model, TrainConfig(batch_size=2, bf16=False), SEQ, world_size=1, strategy="ddp")
    assert est["comm_buffers"] == 0
    assert est["activations"] == 2 * SEQ * 4 * LAYERS * activation_elements(D, F)


def test_fsdp_shards_states_and_holds_the_root_and_two_layers_unsharded():
    model = tiny_llama()
    n = param_count(model)
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    root = n - LAYERS * layer
    est = estimate_memory(model, TrainConfig(batch_size=8), SEQ, world_size=4, strategy="fsdp")
    assert est["params"] == est["grads"] == 4 * n // 4
    assert est["optimizer"] == 8 * n // 4
    assert est["comm_buffers"] == 4 * (root + 2 * layer)


def test_gradient_checkpointing_keeps_layer_inputs_and_one_layer():
    model = tiny_llama()
    plain = estimate_memory(model, TrainConfig(batch_size=1), SEQ, 1, "ddp")
    ckpt = estimate_memory(model, TrainConfig(batch_size=1, gradient_checkpointing=True), SEQ, 1, "ddp")
    assert ckpt["activations"] == SEQ * 2 * (LAYERS * D + activation_elements(D, F))
    assert ckpt["activations"] < plain["activations"]
    assert ckpt["params"] == plain["params"] and ckpt["logits"] == plain["logits"]


def test_bad_strategy_is_rejected():
    with pytest.raises(ValueError, match="strategy"):
        estimate_memory(tiny_llama(), TrainConfig(), SEQ, 1, "zero3")


def test_a_run_that_does_not_fit_is_warned_about(monkeypatch, caplog):
    model = tiny_llama()
    cfg = TrainConfig(batch_size=8)
    total = estimate_memory(model, cfg, SEQ, 1, "ddp")["total"]
    for free, warned in ((total - 1, True), (total + 1, False)):
        monkeypatch.setattr(memory, "free_memory", lambda device, free=free: (free, 2 * total))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="refine.train.memory"):
            log_memory_estimate(model, cfg, SEQ, 1, "ddp", torch.device("cuda"))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert bool(warnings) == warned
        if warned:
            assert "gradient_checkpointing" in warnings[0].getMessage()


def test_no_gpu_means_no_comparison():
    assert memory.free_memory(torch.device("cpu")) is None


def test_the_estimate_counts_fp32_masters_of_a_bf16_checkpoint(tmp_path):
    """A bf16 checkpoint is trained as fp32 masters: the loader gives fp32 and the estimate counts
    4 bytes per parameter, the bytes the loaded model really holds (also for a bf16 model)."""
    from refine.models.registry import load_model

    tiny_llama().to(torch.bfloat16).save_pretrained(tmp_path)
    stored = load_model(tmp_path, dtype=None)
    assert stored.dtype == torch.bfloat16
    loaded = load_model(tmp_path)
    n = param_count(loaded)
    held = sum(p.numel() * p.element_size() for p in loaded.parameters())
    for model in (loaded, stored):
        est = estimate_memory(model, TrainConfig(batch_size=2), SEQ, world_size=1, strategy="ddp")
        assert est["params"] == est["grads"] == held == 4 * n
        assert est["optimizer"] == 8 * n


def test_the_logged_estimate_counts_bf16_activations_only_where_autocast_runs(monkeypatch):
    model, cfg = tiny_llama(), TrainConfig(batch_size=2, bf16=True)
    monkeypatch.setattr(memory, "free_memory", lambda device: None)
    on_cpu = log_memory_estimate(model, cfg, SEQ, 1, "ddp", torch.device("cpu"))
    on_gpu = log_memory_estimate(model, cfg, SEQ, 1, "ddp", torch.device("cuda"))
    assert on_cpu["activations"] == 2 * SEQ * 4 * LAYERS * activation_elements(D, F)  # fp32 on the CPU
    assert on_gpu["activations"] == 2 * SEQ * 2 * LAYERS * activation_elements(D, F)


# --- REFINE rows and states, the study table (config/paper.yaml at 16K) ---------------------------

def _tiny(arch):
    from refine.models.registry import build_model

    overrides = {"hidden_size": 64, "num_hidden_layers": 2}
    overrides.update({"window_size": 16, "lact_chunk_size": 16} if arch == "lact" else {"num_heads": 2})
    return build_model(arch, 53, overrides)


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_state_elements_count_the_states_refine_holds(arch):
    """`state_elements` == the elements of the states `encode` hands out for one start of one row
    (past LaCT's window and into a chunk, so every buffer is full size)."""
    from refine.models.state import encode, map_states

    model = _tiny(arch)
    enc = encode(model, torch.randint(0, 53, (1, 80)), at=torch.tensor([[50]]), logits=False)
    counted = []
    map_states(enc.states, lambda t: counted.append(t.numel()) or t)
    assert memory.state_elements(model.config) == sum(counted)


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_the_intermediate_size_is_the_one_the_model_builds(arch):
    model = _tiny(arch)
    assert memory._model_shape(model)[1] == model.model.layers[0].mlp.gate_proj.out_features


def test_rows_per_forward_follow_micro_batches_not_grad_accum():
    from refine.rl.config import RefineConfig

    model = _tiny("delta_net")
    ntp = TrainConfig(batch_size=16, grad_accum=8)
    assert memory.forward_rows(ntp, 8) == 2  # grad_accum accumulates batches of 16, it does not split them
    big = TrainConfig(batch_size=128)
    assert memory.forward_rows(big, 8, RefineConfig(mini_batch_size=32)) == 4
    assert memory.forward_rows(big, 8, RefineConfig(mini_batch_size=32, micro_batch_size=1)) == 1
    assert memory.forward_rows(big, 8, RefineConfig()) == 16
    whole = estimate_memory(model, big, 2048, 8, "ddp", refine=RefineConfig(mini_batch_size=32))
    micro = estimate_memory(model, big, 2048, 8, "ddp", refine=RefineConfig(mini_batch_size=32, micro_batch_size=1))
    assert (whole["rows"], micro["rows"]) == (4, 1) and micro["tokens"] == 2048
    assert micro["activations"] * 4 == whole["activations"]
    assert micro["states"] < whole["states"] and micro["total"] < whole["total"]
    assert estimate_memory(model, ntp, 2048, 8, "ddp")["states"] == 0  # NTP holds no REFINE states


def test_refine_states_arithmetic():
    """rows·c·(1 + 2n) states plus the forward's snapshots: encode_segments' 2·rows·(rows·c + 1) for
    DeltaNet on CUDA; LaCT's fast weights and momenta before every chunk."""
    from refine.rl.config import RefineConfig

    rc = RefineConfig(num_positions=8, num_rollouts=1, micro_batch_size=2)
    cfg = TrainConfig(batch_size=4)
    delta, lact = _tiny("delta_net"), _tiny("lact")
    one = 4 * memory.state_elements(delta.config)
    assert estimate_memory(delta, cfg, 256, 1, "ddp", refine=rc)["states"] == one * (2 * 8 * 3 + 2 * 2 * (2 * 8 + 1))
    fast = 2 * 6 * 2 * 32 * 32  # layers x (w0, w1, w2, m0, m1, m2) x [heads, d_h, d_f]
    one = 4 * memory.state_elements(lact.config)
    assert estimate_memory(lact, cfg, 256, 1, "ddp", refine=rc)["states"] == one * 2 * 8 * 3 + 4 * fast * 2 * 16


def test_the_paper_config_table_covers_every_section_and_fits_where_stated():
    """The study table of config/paper.yaml (meta-device models of the paper's checkpoints, 8 GPUs,
    16K tokens): every training section of both models; REFINE runs 1 row per forward; every
    section fits an 80 GiB GPU except LaCT's TTT-REFINE (one process: nothing to shard; its
    states, ~1.9 GiB per rollout start, are counted in fp32 as an upper bound)."""
    from refine.config import REPO_ROOT, merge_config_files
    from refine.study import validate_config

    paper = merge_config_files([REPO_ROOT / "config" / "config.yaml", REPO_ROOT / "config" / "paper.yaml"])
    table = memory.study_table(validate_config(paper, "paper"))
    sections = {"midtrain.sft", "midtrain.sft_matched", "midtrain.refine", "posttrain.sft", "posttrain.nested_sft",
                "posttrain.nested_refine", "eval.ttt_sft", "eval.ttt_refine"}  # fmt: skip
    assert {(r["model"], r["section"]) for r in table} == {(m, s) for m in ("deltanet", "lact") for s in sections}
    rows = {(r["model"], r["section"]): r for r in table}
    assert rows["deltanet", "midtrain.refine"]["rows"] == 1 and rows["deltanet", "midtrain.refine"]["seq_len"] == 16384
    assert rows["deltanet", "midtrain.refine"]["micro_batches"] == 4  # 32 / 8 GPUs, 1 row each
    assert rows["deltanet", "midtrain.sft"]["rows"] == 1 and rows["deltanet", "midtrain.sft"]["micro_batches"] == 16
    too_big = sorted(key for key, r in rows.items() if r["GiB"] > 80)
    assert too_big == [("lact", "eval.ttt_refine")]
    assert rows["deltanet", "eval.ttt_sft"]["rows"] == 1  # reset "example": one prompt per update
    params = {"deltanet": 1.37e9, "lact": 0.86e9}  # LaCT-760M's shape counts 863M with its untied 32K head
    for (model, _), r in rows.items():  # the meta models have the checkpoints' sizes, not the tiny ones
        assert r["params"] * GIB == pytest.approx(4 * params[model] / (8 if r["strategy"] == "fsdp" else 1), rel=0.05)


def test_the_cli_prints_the_table(capsys):
    from refine.config import REPO_ROOT

    table = memory.main(["--config", str(REPO_ROOT / "config" / "paper.yaml")])
    out = capsys.readouterr().out
    assert out.count("\n") == len(table) + 2 and "| deltanet | midtrain.refine | 1 x 16384 |" in out
