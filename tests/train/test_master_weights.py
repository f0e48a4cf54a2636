"""fp32 master weights whatever the checkpoint's dtype: a bf16 checkpoint loads for training as fp32,
one AdamW step at the paper's lr 1e-6 changes every weight that has a gradient, the optimizer
refuses bf16 weights, and the final checkpoint is written in `train.save_dtype`."""

import json

import pytest
import torch

from refine.models.registry import build_model, load_model, save_model, special_token_ids
from refine.tracking import NullTracker
from refine.train.config import TrainConfig
from refine.train.loop import train
from refine.train.ntp import NTPMethod
from refine.train.optim import build_optimizer

VOCAB, SEQ, ROWS = 61, 24, 4


def _bf16_checkpoint(path):
    torch.manual_seed(0)
    model = build_model("delta_net", VOCAB, {"hidden_size": 32, "num_hidden_layers": 2, "num_heads": 2})
    model.to(torch.bfloat16).save_pretrained(path)
    return model


def _rows():
    x = torch.randint(0, VOCAB, (ROWS, SEQ), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": r, "labels": r.clone(), "attention_mask": torch.ones_like(r)} for r in x]


def _gradients(model, rows):
    """Gradient of the NTP loss of all rows (the one batch the loop will draw), on a copy."""
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    model.zero_grad()
    (loss, _), = list(NTPMethod().updates(model, batch))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def test_a_bf16_checkpoint_loads_for_training_as_fp32(tmp_path):
    source = _bf16_checkpoint(tmp_path / "ckpt")
    assert load_model(tmp_path / "ckpt", dtype=None).dtype == torch.bfloat16  # stored as bf16
    model = load_model(tmp_path / "ckpt")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for (name, p), q in zip(model.named_parameters(), source.parameters(), strict=True):
        assert torch.equal(p, q.float()), name  # the upcast is exact


def test_one_step_at_lr_1e6_changes_every_weight_with_a_gradient(tmp_path):
    _bf16_checkpoint(tmp_path / "ckpt")
    model = load_model(tmp_path / "ckpt")
    rows = _rows()
    grads = _gradients(model, rows)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(lr=1e-6, max_steps=1, batch_size=ROWS, checkpoint_every=1, log_every=1)
    train(model, NTPMethod(), rows, cfg, tmp_path / "run", NullTracker())
    with_grad = unchanged = 0
    for name, p in model.named_parameters():
        moved = p.detach() != before[name]
        has_grad = grads[name] != 0
        with_grad += int(has_grad.sum())
        unchanged += int((has_grad & ~moved).sum())
    assert with_grad > 0.9 * sum(p.numel() for p in model.parameters())
    assert unchanged == 0


def test_the_optimizer_refuses_bf16_weights():
    model = build_model("delta_net", VOCAB, {"hidden_size": 32, "num_hidden_layers": 1, "num_heads": 2})
    with pytest.raises(ValueError, match="fp32 master weights"):
        build_optimizer(model.to(torch.bfloat16), TrainConfig())


@pytest.mark.parametrize("save_dtype", ["float32", "bfloat16"])
def test_the_final_checkpoint_is_written_in_the_configured_dtype(tmp_path, save_dtype):
    _bf16_checkpoint(tmp_path / "ckpt")
    model = load_model(tmp_path / "ckpt")
    cfg = TrainConfig(lr=1e-6, max_steps=1, batch_size=ROWS, checkpoint_every=1, log_every=1, save_dtype=save_dtype)
    train(model, NTPMethod(), _rows(), cfg, tmp_path / "run", NullTracker())
    assert model.dtype == torch.float32  # saving does not touch the master weights
    saved = load_model(tmp_path / "run" / "model", dtype=None)
    assert saved.dtype == getattr(torch, save_dtype)
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["dtype"] == save_dtype
    for (name, p), q in zip(model.named_parameters(), saved.parameters(), strict=True):
        assert torch.equal(p.detach().to(getattr(torch, save_dtype)).to(q.dtype), q.detach()), name


def test_bad_save_dtype_is_rejected():
    with pytest.raises(ValueError, match="save_dtype"):
        TrainConfig(save_dtype="int8")


def test_save_model_keeps_tied_weights_tied(tmp_path):
    model = build_model("delta_net", VOCAB, {"hidden_size": 32, "num_hidden_layers": 1, "num_heads": 2,
                                             "tie_word_embeddings": True})  # fmt: skip
    save_model(model, tmp_path, "bfloat16")
    loaded = load_model(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embeddings.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight.detach().to(torch.bfloat16).float())


def test_built_models_carry_the_tokenizers_special_ids():
    class Tok:
        bos_token_id, eos_token_id, pad_token_id = 2, 3, 0

    assert special_token_ids(Tok()) == {"bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}
    model = build_model("lact", VOCAB, {"hidden_size": 32, "num_hidden_layers": 1}, tokenizer=Tok())
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (2, 3, 0)
    model = build_model("delta_net", VOCAB, {"num_hidden_layers": 1, "eos_token_id": 7}, tokenizer=Tok())
    assert model.config.eos_token_id == 7  # an explicit override wins
