"""The chunked LM head: scoring pass and NTP loss equal their unchunked twins (values and gradients),
and the head never sees more than micro-batch x chunk positions at once."""

import pytest
import torch

from refine.models.registry import build_model
from refine.rl.positions import token_entropy
from refine.train.chunked import chunked_entropy, chunked_next_token_loss, final_hidden, output_head, score_pass
from refine.train.ntp import NTPMethod, evaluate_ntp, next_token_loss

VOCAB = 53
BSZ, SEQ = 5, 37  # odd sizes: the last chunk and the last micro-batch are partial


def _model(arch):
    torch.manual_seed(0)
    overrides = {"hidden_size": 32, "num_hidden_layers": 2}
    overrides.update({"window_size": 8, "lact_chunk_size": 8} if arch == "lact" else {"num_heads": 2})
    return build_model(arch, VOCAB, overrides)


def _labels(x):
    labels = x.clone()
    labels[0, :5] = -100  # some ignored targets
    labels[2, 20:] = -100
    return labels


class _ShapeRecorder:
    """Forward hook on the LM head: the largest number of positions one call of it saw."""

    def __init__(self, head):
        self.largest = 0
        self.handle = head.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.largest = max(self.largest, output.shape[:-1].numel())


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_score_pass_equals_the_full_logits(arch):
    model = _model(arch)
    x = torch.randint(0, VOCAB, (BSZ, SEQ))
    with torch.no_grad():
        out = model(input_ids=x, output_hidden_states=True)
    recorder = _ShapeRecorder(output_head(model))
    hidden, entropy = score_pass(model, x, micro_batch=2, chunk=8)
    recorder.handle.remove()
    torch.testing.assert_close(hidden, out.hidden_states[-1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(entropy, token_entropy(out.logits), rtol=1e-5, atol=1e-6)
    assert entropy.dtype == torch.float32 and entropy.shape == (BSZ, SEQ)
    assert recorder.largest <= 2 * 8  # micro-batch x chunk positions, never B x S


def test_logits_to_keep_of_lact_keeps_the_last_positions():
    model = _model("lact")
    x = torch.randint(0, VOCAB, (2, SEQ))
    with torch.no_grad():
        full = model(input_ids=x).logits
        last = model(input_ids=x, logits_to_keep=1).logits
    assert last.shape == (2, 1, VOCAB)
    torch.testing.assert_close(last, full[:, -1:])


def test_chunked_entropy_of_given_hidden_states():
    model = _model("delta_net")
    x = torch.randint(0, VOCAB, (BSZ, SEQ))
    with torch.no_grad():
        out = model(input_ids=x, output_hidden_states=True)
        entropy = chunked_entropy(out.hidden_states[-1], output_head(model), chunk=5, micro_batch=3)
    torch.testing.assert_close(entropy, token_entropy(out.logits), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_chunked_loss_and_gradients_equal_the_full_logits(arch):
    model = _model(arch)
    x = torch.randint(0, VOCAB, (BSZ, SEQ))
    labels = _labels(x)

    def run(chunked):
        model.zero_grad()
        if chunked:
            hidden = final_hidden(model, x)
            loss, correct, count = chunked_next_token_loss(hidden, output_head(model), labels, chunk=7)
        else:
            loss, correct, count = next_token_loss(model(input_ids=x).logits, labels)
        loss.backward()
        return loss.detach(), int(correct), int(count), {n: p.grad.clone() for n, p in model.named_parameters()}

    l_chunk, c_chunk, n_chunk, g_chunk = run(True)
    l_full, c_full, n_full, g_full = run(False)
    torch.testing.assert_close(l_chunk, l_full, rtol=1e-6, atol=1e-6)
    assert (c_chunk, n_chunk) == (c_full, n_full)
    assert n_full == BSZ * (SEQ - 1) - 4 - (SEQ - 20)  # the ignored targets do not count
    scale = max(float(g.abs().max()) for g in g_full.values())  # fp32 summation order differs
    for name, grad in g_full.items():
        torch.testing.assert_close(g_chunk[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_ntp_method_chunked_equals_unchunked():
    model = _model("delta_net")
    x = torch.randint(0, VOCAB, (BSZ, SEQ))
    batch = {"input_ids": x, "labels": _labels(x), "attention_mask": torch.ones_like(x)}
    results = []
    for chunk in (None, 4):
        model.zero_grad()
        recorder = _ShapeRecorder(output_head(model))
        (loss, metrics), = list(NTPMethod(logits_chunk=chunk).updates(model, batch))
        loss.backward()
        recorder.handle.remove()
        results.append((loss.detach(), metrics, [p.grad.clone() for p in model.parameters()], recorder.largest))
    (l0, m0, g0, seen0), (l1, m1, g1, seen1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-6, atol=1e-6)
    assert m1["ntp_accuracy"] == m0["ntp_accuracy"]
    scale = max(float(g.abs().max()) for g in g0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)
    assert seen0 == BSZ * SEQ and seen1 == BSZ * 4  # the chunked path never runs the head on all rows


def test_evaluate_ntp_does_not_depend_on_the_chunk():
    model = _model("lact")
    x = torch.randint(0, VOCAB, (4, SEQ))
    rows = [{"input_ids": r, "labels": r.clone(), "attention_mask": torch.ones_like(r)} for r in x]
    a = evaluate_ntp(model, rows, batch_size=3, logits_chunk=None)
    b = evaluate_ntp(model, rows, batch_size=3, logits_chunk=6)
    assert a["val_tokens"] == b["val_tokens"] == 4 * (SEQ - 1)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-6)
    assert b["val_accuracy"] == a["val_accuracy"]


def test_bad_chunk_is_rejected():
    with pytest.raises(ValueError, match="logits_chunk"):
        NTPMethod(logits_chunk=0)


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
@pytest.mark.parametrize("path", ["record", "segments"])
def test_a_refine_update_never_runs_the_head_on_whole_sequences(monkeypatch, arch, path):
    """Scoring pass, grad forward, first-token logits and NTP loss: no LM-head call sees more than
    a chunk per row (the rollout decode sees its N x k rows), on both encode paths."""
    import refine.models.state as state
    import refine.train.refine as refine_method
    from refine.rl.config import RefineConfig

    if path == "segments":  # the path CUDA takes (no state recorder)
        monkeypatch.setattr(state, "can_record", lambda model: False)
        monkeypatch.setattr(refine_method, "can_record", lambda model: False)
    model = _model(arch)
    x = torch.randint(0, VOCAB, (4, 96))
    batch = {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}
    cfg = RefineConfig(num_positions=3, rollout_len=4, margin=8, mini_batch_size=2, score_micro_batch=1,
                       logits_chunk=8)  # fmt: skip
    recorder = _ShapeRecorder(output_head(model))
    losses = [loss for loss, _ in refine_method.RefineMethod(cfg).updates(model, batch)]
    for loss in losses:
        loss.backward()  # the backward recomputes chunks; it runs the head on chunks too
    recorder.handle.remove()
    assert len(losses) == 2
    assert recorder.largest <= max(2 * 8, 2 * 3 * 4)  # mini-batch x chunk, or N x k decode rows
    assert recorder.largest < 2 * 96
