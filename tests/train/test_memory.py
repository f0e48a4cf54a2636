"""The memory estimate: its arithmetic on a tiny Llama (sizes counted independently here), FSDP
sharding and checkpointing shrink what they should, and a run that will not fit logs a warning."""

import logging

import pytest
import torch
from test_loop import tiny_llama

import refine.train.memory as memory
from refine.train.config import TrainConfig
from refine.train.memory import activation_elements, estimate_memory, log_memory_estimate

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
