"""REFINE's job done with TRL's GRPOTrainer, side by side with the project's update (issue 12).

The work of one update, for both: the same tiny DeltaNet (same initial weights), the same batch
of B random-token sequences of length S, the same c rollout starts per sequence (the project's
entropy selection on the initial model), k-token completions sampled at temperature 1 (EOS
masked: TRL's `min_new_tokens = k`), the cosine reward (mean over the k positions of the cosine
between the hidden states of the generated tokens and of the true continuation, both from the
pre-update model), GRPO advantages, the PPO-clipped loss with clip 0.2 and dual clip 3.0 (TRL's
`delta`), token-mean, 1 PPO epoch, AdamW at lr 1e-6 with grad clip 1.0, one optimizer step.

- TRL: the prompts are the B*c prefixes x[:s_j] (a word-level tokenizer maps token i to the word
  `w<i>_` and back, so TRL's text prompts are exactly those ids: tested), `num_generations = n`
  completions each; the reward is a TRL reward function that runs, with no grad, one forward over
  the B sequences for h_true and one over each prompt + its completions for h_pred. TRL then
  re-encodes every prompt + completion with grad for the loss (it has no state to carry).
- `refine_onepass` (n = 2): `RefineMethod` as the project runs it, NTP term included (TRL's update
  has none: the project does more work per update, not less).
- `ntp`: one NTP update of the same batch.

Deviations, and why:
- n = 2 rollouts per prefix with the advantage normalised within the n rollouts of a prefix
  (REFINE.md §1.5's n > 1 group), not the authors' n = 1 with the c positions of a sequence as
  the group: TRL requires `num_generations >= 2` and always groups the completions of one prompt.
- The three run interleaved in one process: each TRL optimizer step is followed (in a
  `TrainerCallback`) by one project update and one NTP update on their own copies of the model,
  so machine noise spreads over all three; the first step of each is warm-up.
- TRL's step time is measured from `on_step_begin` to `on_step_end` (generation, reward, loss,
  backward, optimizer step; not its logging). TRL's left-padded prompts go through fla's
  varlen path (`attention_mask` -> `cu_seqlens`), which the torch backend supports.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time

import psutil
import torch

from refine.bench.measure import PeakRSS, Samples, cpu_busy_s, own_cpu_s
from refine.models.registry import build_model
from refine.models.state import encode
from refine.rl.config import RefineConfig
from refine.train.ntp import NTPMethod
from refine.train.optim import apply_updates
from refine.train.refine import RefineMethod

log = logging.getLogger(__name__)

ROLLOUTS_PER_PREFIX = 2  # TRL's minimum num_generations


def _word(i: int) -> str:
    # "w<i>_": no word is a substring of another or of two joined words. transformers splits the text at
    # its special tokens *before* pre-tokenization, so with plain "w<i>" an EOS "w2" would cut "w23" in two.
    return f"w{i}_"


def word_tokenizer(vocab_size: int, eos_id: int):
    """A tokenizer whose words `w0_ ... w<V-1>_` are the token ids 0..V-1 (no special tokens added)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {_word(i): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=_word(eos_id)))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=_word(eos_id), pad_token=_word(eos_id))


def ids_to_text(ids) -> str:
    return " ".join(_word(int(i)) for i in ids)


def cosine_reward_fn(model, input_ids: torch.Tensor, k: int):
    """TRL reward function: mean over the k completion positions of cos(h_pred, h_true), both from the
    model as it is when TRL scores (pre-update). Extra dataset columns `row`, `start` locate the prefix."""

    @torch.no_grad()
    def cosine_reward(prompts, completions, completion_ids, row, start, **_):
        true_hidden = encode(model, input_ids, logits=False).hidden  # [B, S, D]
        rewards = [0.0] * len(completion_ids)
        by_prompt: dict[tuple[int, int], list[int]] = {}
        for i, key in enumerate(zip(row, start, strict=True)):
            by_prompt.setdefault((int(key[0]), int(key[1])), []).append(i)
        for (b, s), idx in by_prompt.items():
            comp = torch.tensor([list(completion_ids[i])[:k] for i in idx])  # [n, k]
            seqs = torch.cat([input_ids[b, :s].expand(len(idx), -1), comp], dim=1)  # [n, s + k]
            pred = encode(model, seqs, logits=False).hidden[:, s:]  # [n, k, D]
            cos = torch.nn.functional.cosine_similarity(pred, true_hidden[b, s : s + k][None], dim=-1)
            for i, value in zip(idx, cos.mean(dim=1).tolist(), strict=True):
                rewards[i] = value
        return rewards

    return cosine_reward


class _Interleave:
    """TrainerCallback: time each TRL step, then one project update and one NTP update."""

    def __init__(self, others: dict, samples: dict[str, Samples]):
        self.others, self.samples, self.step = others, samples, 0
        self._process = psutil.Process()

    def on_step_begin(self, args, state, control, **kwargs):
        self._busy0, self._own0 = cpu_busy_s(), own_cpu_s(self._process)
        self._rss = PeakRSS().__enter__()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = time.perf_counter() - self._t0
        self._rss.__exit__(None, None, None)
        other = max(0.0, (cpu_busy_s() - self._busy0) - (own_cpu_s(self._process) - self._own0))
        count = self.step > 0  # step 0 is warm-up
        if count:
            self.samples["trl_grpo"].add(elapsed, self._rss.peak - self._rss.before, other)
        for name, (model, method, batch, optimizer) in self.others.items():
            self.samples[name].time(apply_updates, model, method, batch, optimizer, count=count)
        log.info("TRL round %d: %s", self.step, {n: round(s.times[-1], 3) for n, s in self.samples.items() if s.times})
        self.step += 1


def bench_trl(
    seq_len: int,
    batch_size: int,
    num_positions: int,
    rollout_len: int,
    repeats: int,
    vocab_size: int = 1024,
    overrides: dict | None = None,
    margin: int | None = None,  # None: RefineConfig's default
    seed: int = 0,
) -> list[dict]:
    """TRL GRPOTrainer vs the project's one-pass update vs NTP on the tiny DeltaNet; one row each."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    n = ROLLOUTS_PER_PREFIX
    torch.manual_seed(seed)
    model = build_model("delta_net", vocab_size, overrides).train()
    ids = torch.randint(0, vocab_size, (batch_size, seq_len))
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    cfg = RefineConfig(num_positions=num_positions, rollout_len=rollout_len, num_rollouts=n,
                       **({} if margin is None else {"margin": margin}))
    cfg.validate_for_length(seq_len)
    method = RefineMethod(cfg, "onepass")
    with torch.no_grad():
        _, _, starts = method.score_and_select(model, ids, batch["attention_mask"].bool())  # [B, c]
    others = {}
    for name, other_method in (("refine_onepass", method), ("ntp", NTPMethod())):
        other_model = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(other_model.parameters(), lr=1e-6, betas=(0.9, 0.999), weight_decay=0.01)
        others[name] = (other_model, other_method, batch, optimizer)
    rows, cols = zip(*[(b, int(s)) for b in range(batch_size) for s in starts[b]], strict=True)
    data = Dataset.from_dict(
        {"prompt": [ids_to_text(ids[b, :s]) for b, s in zip(rows, cols, strict=True)], "row": rows, "start": cols}
    )
    eos = model.config.eos_token_id
    samples = {name: Samples() for name in ("trl_grpo", "refine_onepass", "ntp")}

    class Callback(_Interleave, TrainerCallback):
        pass

    with tempfile.TemporaryDirectory() as out_dir:
        args = GRPOConfig(
            output_dir=out_dir,
            per_device_train_batch_size=len(data) * n,  # the whole batch in one optimizer step
            gradient_accumulation_steps=1,
            num_generations=n,
            max_completion_length=rollout_len,
            generation_kwargs={"min_new_tokens": rollout_len},
            temperature=cfg.temperature,
            top_p=1.0,
            top_k=0,
            epsilon=cfg.clip,
            delta=cfg.dual_clip,
            beta=0.0,
            num_iterations=1,
            loss_type="dapo",  # token-mean over the batch, as the project's
            learning_rate=1e-6,
            lr_scheduler_type="constant",
            weight_decay=0.01,
            max_grad_norm=1.0,
            max_steps=repeats + 1,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            bf16=False,
            seed=seed,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[cosine_reward_fn(model, ids, rollout_len)],
            args=args,
            train_dataset=data,
            processing_class=word_tokenizer(vocab_size, eos),
            callbacks=[Callback(others, samples)],
        )
        before = [p.detach().clone() for p in model.parameters()]
        trainer.train()
    changed = sum(not torch.equal(p0, p.detach()) for p0, p in zip(before, model.parameters(), strict=True))
    if changed == 0:  # the timing would be of an update that does nothing
        raise RuntimeError("TRL's GRPOTrainer changed no weight of the model: its update did not run")
    log.info("TRL's updates changed %d of %d parameter tensors", changed, len(before))
    medians = {name: s.summary()["median_s"] for name, s in samples.items()}
    return [
        {
            "measurement": "trl",
            "arch": "delta_net",
            "variant": name,
            "seq_len": seq_len,
            "batch_size": batch_size,
            "num_positions": num_positions,
            "rollout_len": rollout_len,
            "num_rollouts": n,
            "mini_batches": 1,
            **s.summary(),
            "tokens_per_s": batch_size * seq_len / medians[name],
            "ratio": medians[name] / medians["refine_onepass"],
            "ratio_to": "refine_onepass",
        }
        for name, s in samples.items()
    ]
