"""Details where the project now follows the authors' release (issue 14, Training item 7): argmax/argmin
select on the raw entropy, EOS is never sampled during the k rollout tokens, teacher-forced
log-probs use the sampling temperature, post-training answers carry no EOS (<= 32 targets), and
cumulative TTT keeps one AdamW (weight decay 0.01) and makes 2 mini-batch steps per test batch of 8."""

import pytest
import torch

import refine.train.ttt as ttt
from refine.data.tokenizer import build_byte_tokenizer
from refine.models.registry import build_model
from refine.models.state import encode
from refine.rl.config import RefineConfig
from refine.rl.positions import select_positions, smooth_entropy
from refine.train.ntp import NTPMethod
from refine.train.posttrain import QADataset
from refine.train.refine import RefineMethod, rollout_from_states

VOCAB, EOS, SEQ = 53, 3, 96


class _Tokens:
    bos_token_id, eos_token_id, pad_token_id = 2, EOS, 0


def _model(arch="delta_net"):
    torch.manual_seed(0)
    overrides = {"hidden_size": 32, "num_hidden_layers": 2}
    overrides.update({"window_size": 16, "lact_chunk_size": 16} if arch == "lact" else {"num_heads": 2})
    return build_model(arch, VOCAB, overrides, tokenizer=_Tokens())


def _ids(bsz=3, seed=1):
    return torch.randint(4, VOCAB, (bsz, SEQ), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["argmax", "argmin"])
def test_argmax_and_argmin_select_on_the_raw_entropy(mode):
    model, x = _model(), _ids()
    valid = torch.ones_like(x, dtype=torch.bool)
    cfg = RefineConfig(num_positions=4, rollout_len=5, margin=8, selection=mode)
    _, entropy, starts = RefineMethod(cfg).score_and_select(model, x, valid)
    raw = select_positions(entropy, valid, 4, 5, 8, mode)
    smoothed = select_positions(smooth_entropy(entropy, cfg.window, valid), valid, 4, 5, 8, mode)
    assert torch.equal(starts, raw)
    assert not torch.equal(raw, smoothed)  # the two readings differ here, so the test can tell


def _eos_heavy(model):
    """Make EOS the overwhelmingly likely next token everywhere (a hook on the LM head)."""

    def push(module, args, output):
        output = output.clone()
        output[..., EOS] += 30.0
        return output

    return model.get_output_embeddings().register_forward_hook(push)


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_eos_is_never_sampled_during_the_rollout(arch):
    model, x = _model(arch), _ids()
    hook = _eos_heavy(model)
    starts = torch.tensor([[30, 50], [25, 60], [40, 70]])
    with torch.no_grad():
        enc = encode(model, x, at=starts)
    first = enc.logits[torch.arange(3).repeat_interleave(2), starts.flatten() - 1]  # [6, V]
    counts = {}
    for mask_eos in (True, False):
        cfg = RefineConfig(num_positions=2, rollout_len=5, margin=8, num_rollouts=2, mask_eos=mask_eos)
        roll = rollout_from_states(model, enc.states, first, cfg)
        counts[mask_eos] = int((roll.tokens == EOS).sum())
    hook.remove()
    assert counts[True] == 0
    assert counts[False] > 0.9 * 6 * 2 * 5  # unmasked, the pushed EOS is drawn almost always


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_teacher_forced_logprobs_use_the_sampling_temperature(temperature):
    model, x = _model(), _ids(2)
    starts = torch.tensor([[30, 60], [45, 70]])
    cfg = RefineConfig(num_positions=2, rollout_len=4, margin=8, temperature=temperature)
    method = RefineMethod(cfg)
    tokens = torch.randint(4, VOCAB, (4, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        enc = encode(model, x, at=starts)
        first = enc.logits[torch.arange(2).repeat_interleave(2), starts.flatten() - 1]
        logp = method._teacher_forced(model, enc.states, first, tokens)  # [4, k]
        rows = [(b, s) for b in range(2) for s in starts[b].tolist()]
        expected = []
        for row, (b, s) in enumerate(rows):  # reference: the whole prefix + rollout re-encoded
            seq = torch.cat([x[b, :s], tokens[row, :-1]])[None]
            logits = model(input_ids=seq).logits[0, s - 1 :] / temperature  # [k, V]
            expected.append(torch.log_softmax(logits, -1).gather(-1, tokens[row, :, None])[:, 0])
        at_one = torch.log_softmax(model(input_ids=torch.cat([x[0, :30], tokens[0, :-1]])[None]).logits[0, 29:], -1)
    torch.testing.assert_close(logp, torch.stack(expected), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logp[0], at_one.gather(-1, tokens[0, :, None])[:, 0], atol=1e-3)


def test_posttraining_answers_have_at_most_32_targets_and_no_eos(tmp_path):
    tokenizer = build_byte_tokenizer(tmp_path / "tok")
    long, short = "x" * 40, "yes"
    records = [{"input": "Question: what?\nAnswer:", "outputs": [long]},
               {"input": "Question: and?\nAnswer:", "outputs": [short]}]  # fmt: skip
    rows = QADataset(records, tokenizer, max_answer_tokens=32)
    targets = [row["labels"][row["labels"] != -100] for row in rows]
    assert len(targets[0]) == 32 and len(targets[1]) == len(tokenizer(" " + short)["input_ids"]) <= 4
    assert all(tokenizer.eos_token_id not in t.tolist() for t in targets)
    with_eos = QADataset(records, tokenizer, max_answer_tokens=32, append_eos=True)
    last = [row["labels"][row["labels"] != -100] for row in with_eos]
    assert len(last[0]) == 32 and all(t[-1] == tokenizer.eos_token_id for t in last)


class _CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [4 + (ord(c) % (VOCAB - 4)) for c in text]}


def _prompts(n):
    return [f"prompt number {i} " * 4 for i in range(n)]


def test_cumulative_ttt_keeps_one_optimizer_and_makes_two_steps_per_batch_of_8(monkeypatch):
    model = _model()
    made = []
    real = ttt.ttt_optimizer
    monkeypatch.setattr(ttt, "ttt_optimizer", lambda *a: made.append(real(*a)) or made[-1])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    results, metrics = ttt.ttt_generate(model, _CharTokenizer(), _prompts(16), lambda idx: list(idx), NTPMethod(),
                                        steps=1, lr=1e-3, reset="cumulative", batch_size=8)  # fmt: skip
    assert results == list(range(16))
    assert len(made) == 1  # one optimizer for the whole test set
    assert len(metrics) == 4  # 2 test batches x 2 mini-batch steps
    states = made[0].state
    assert {int(s["step"]) for s in states.values()} == {4}  # its moments carried across batches
    assert made[0].param_groups[0]["weight_decay"] == 0.01
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def test_example_ttt_resets_weights_and_optimizer_per_item(monkeypatch):
    model = _model()
    made = []
    real = ttt.ttt_optimizer
    monkeypatch.setattr(ttt, "ttt_optimizer", lambda *a: made.append(real(*a)) or made[-1])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, metrics = ttt.ttt_generate(model, _CharTokenizer(), _prompts(3), lambda idx: list(idx), NTPMethod(),
                                  steps=2, lr=1e-3, reset="example")  # fmt: skip
    assert len(made) == 3 and len(metrics) == 6
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
