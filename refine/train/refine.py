"""REFINE as a training-loop plug-in: NTP + GRPO on next-sequence rollouts (REFINE.md §1).

One call of `RefineMethod.updates(model, batch)` is one REFINE update of a batch:

1. score: one forward gives per-token entropy and the final hidden states h_true;
2. select: c rollout starts per sequence from the smoothed entropy (`refine.rl.positions`);
3. per mini-batch of sequences (one optimizer step each):
   a. one grad forward over the mini-batch gives the final hidden states (the NTP loss applies
      the LM head to them per chunk) and the model state at every
      start, still connected to the graph (`encode_recorded` + `states_at`, or the
      segment-split `encode` for models without a state recorder);
   b. k tokens are sampled from detached copies of those states, all positions and
      rollouts of the mini-batch decoded together (`rollout_from_states`);
   c. rewards against the true continuation (h_true: the hidden states of the true tokens from
      the same grad forward, detached), GRPO advantages;
   d. the rollout tokens' log-probs are recomputed teacher-forced from the graph-connected
      states (the first from the LM head on the grad forward's hidden state before the start),
      so the policy loss reaches the
      fast-weight writes of the prefix; loss = λ_ntp·L_ntp + λ_pg·L_pg (`refine.rl.losses.combined_loss`:
      a term whose λ is 0 is left out, so no NaN of an unused term reaches the loss).

`mode="reencode"` is the slow reference twin that does what the authors' release does:
every prefix is re-encoded from scratch for its state, and re-encoded again with grad for
the policy loss. Both modes consume the random stream identically, so for one seed they
give the same positions, rollouts, rewards, losses and gradients (tested).

As in the authors' release (tested in tests/train/test_authors_release.py): the model's EOS is
never sampled during the k rollout tokens (`mask_eos`, their min_new_tokens = k); the policy
loss's log-probs divide the logits by the sampling temperature; argmax/argmin selection reads
the raw entropy, `entropy` selection the smoothed one. The old log-probs of the PPO ratio are the
detached teacher-forced ones (verl recomputes them with the actor), so the ratio is 1 by
construction; what checks that the update scores the tokens the rollout drew, as it drew them, is
the metric `rollout_logp_abs_diff`: the mean |log-prob at sampling − teacher-forced log-prob| over
the rollout tokens, ~1e-7 in fp32 (tested; an off-by-one or a temperature mismatch gives > 1e-2).
Memory: no [rows, S, V] logits are ever
made. The no-grad scoring pass runs in `score_micro_batch` rows with the LM head per
`logits_chunk` positions; the grad forward returns hidden states only (the model computes the
last position's logits), the first rollout token's logits come from the LM head on the B*c
start rows, and the NTP term is the checkpointed per-chunk head + cross-entropy
(`refine.train.chunked`), so neither its forward nor its backward holds more than a chunk.

Deviations from the authors' release, with reasons:
- Rollouts of each mini-batch are drawn from the current weights right before its
  optimizer step (fully on-policy), instead of drawing the rollouts of all mini-batches
  before the first step. The states needed for the rollouts then come out of the grad
  forward that also gives the NTP loss, which saves a full no-grad pass per batch. As a
  consequence old log-probs equal the current ones and the PPO ratio is exactly 1 on every
  mini-batch (with the authors' lr of 1e-6 their later mini-batches differ from 1 by a
  negligible amount). ppo_epochs must be 1.
- Positions are selected once per batch with the pre-update weights, as in the release.
  The first mini-batch's grad forward is run before the selection and its (detached) hidden
  states, through the LM head per chunk, serve as the score pass for its rows, when the model has a state
  recorder (`can_record`): same weights, same forward, so the same entropies (the reference
  mode runs the separate no-grad pass); only the other mini-batches' rows get a no-grad
  scoring forward. With one mini-batch per batch the update is one forward + one backward
  plus the k-token rollout and teacher-forced decode.
  `select_per_mini_batch` (off by default; the release's way is the default) drops that
  scoring forward too: mini-batch j selects its positions from its own grad forward, at the weights
  θ_j that also give its rollouts and h_true, so with m mini-batches no row is scored twice (the
  no-grad pass was 11-13% of a 4-mini-batch update of the tiny models at S = 2048). With one
  mini-batch per batch the two are the same update (tested).
- The true hidden states h_true of mini-batch j come from mini-batch j's own grad forward, i.e.
  from the weights θ_j that also produce its rollouts' h_pred (REFINE.md §1.4: both from the same
  model). In the release both come from θ_0, the weights before the batch's first step; taking
  h_true from the scoring pass (θ_0) while the rollouts come from θ_j would compare hidden states
  of two different models on every mini-batch after the first (measured 1−cos ≈ 0.045 after 3
  steps at lr 3e-4, the order of the reward spread). Tested: decoding the true continuation
  from the state at a start reproduces h_true (cosine reward 1) on every mini-batch.

Gradient micro-batches (`micro_batch_size`, the authors' verl `ppo_micro_batch_size_per_gpu`): each
process's mini-batch rows go through steps (a)–(d) in micro-batches of that many rows, each yielding
its loss (metrics None but for the last, the loop's micro-batch contract) before the next one's
forward, and the loop makes one optimizer step per mini-batch. No step comes between them, so every
micro-batch's rollouts come from the mini-batch's weights (ratio 1), and the GRPO groups (within a
sequence) never cross them. Each micro-batch's loss is weighted by its share of the mini-batch's
counted NTP tokens (the NTP term is a token-mean over the mini-batch) and of its rows (the policy
term: c·n·k tokens per row), so the summed gradient is the unsplit mini-batch's (tested, float64);
the metrics are the same weighted means, the reward statistics those of the whole mini-batch. The
rollouts of micro-batches are sampled separately: with temperature > 0 one seed draws other tokens
than without micro-batches.

Distributed (`refine.train.distributed`): `mini_batch_size` is global, as the authors'
`ppo_mini_batch_size`; each rank splits its shard of the batch into mini-batches of
mini_batch_size / world_size rows (the world size of the torch.distributed process group; 1
without one), and the loop hands rank r slice r of every global mini-batch, so every rank makes
batch_size / mini_batch_size optimizer steps per batch, as one process does. The method always
receives the HF model itself (never a `DistributedDataParallel` wrapper; FSDP2 shards it in place
and every forward here goes through its root, which gathers the parameters).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from refine.models.state import (
    Encoded,
    States,
    can_record,
    decode,
    encode,
    encode_recorded,
    map_states,
    reencode_states,
)
from refine.rl.advantages import get_advantage, reward_stats
from refine.rl.config import RefineConfig
from refine.rl.losses import combined_loss, ppo_policy_loss
from refine.rl.positions import select_positions, selection_scores, token_entropy
from refine.rl.rewards import get_reward
from refine.rl.sampling import sample_tokens, token_logprobs
from refine.train.chunked import chunked_entropy, chunked_next_token_loss, output_head, score_pass, unwrap_model
from refine.train.distributed import process_world_size


@dataclass
class Rollouts:
    """k sampled tokens per row, with the pre-update hidden states of those tokens and their
    log-probs under the sampling policy as the rollout saw them.

    tokens: [N, k]; hidden: [N, k, D]; logp: [N, k] fp32 (`token_logprobs` at the sampling
    temperature, full vocabulary); N = (#starts) * n, rows ordered (start, rollout).
    """

    tokens: torch.Tensor
    hidden: torch.Tensor
    logp: torch.Tensor


@torch.no_grad()
def rollout_from_states(model, states: States, first_logits: torch.Tensor, cfg: RefineConfig) -> Rollouts:
    """Sample cfg.rollout_len tokens from each state, cfg.num_rollouts times.

    states: M rows; first_logits: [M, V], the logits at the last prefix token.
    The k-th decode step only produces the hidden state of the last sampled token. With
    cfg.mask_eos the model's EOS ids are never sampled (the authors' min_new_tokens = k).
    """
    n = cfg.num_rollouts
    suppressed = eos_token_ids(model) if cfg.mask_eos else ()
    states = map_states(states, lambda t: t.detach().repeat_interleave(n, dim=0))
    logits = first_logits.detach().repeat_interleave(n, dim=0)
    tokens, hidden, logp = [], [], []
    for _ in range(cfg.rollout_len):
        tok = sample_tokens(logits, cfg.temperature, cfg.top_p, cfg.top_k, suppress_tokens=suppressed)  # [M*n]
        logp.append(token_logprobs(logits, tok, cfg.temperature))  # [M*n]
        out = decode(model, states, tok[:, None])
        tokens.append(tok)
        hidden.append(out.hidden[:, 0])
        states, logits = out.states, out.logits[:, 0]
    return Rollouts(torch.stack(tokens, dim=1), torch.stack(hidden, dim=1), torch.stack(logp, dim=1))


def eos_token_ids(model) -> tuple[int, ...]:
    """The EOS id(s) of the model's config (an int or a list in HF configs; none if unset)."""
    eos = getattr(unwrap_model(model).config, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos]))


def _gather_rows(x: torch.Tensor, starts: torch.Tensor, offset: int, length: int) -> torch.Tensor:
    """x[b, starts[b, j] + offset : ... + length] for every (b, j): [B*c, length, ...]."""
    idx = starts[:, :, None] + offset + torch.arange(length, device=x.device)  # [B, c, L]
    rows = torch.arange(x.shape[0], device=x.device)[:, None, None].expand_as(idx)
    return x[rows, idx].flatten(0, 1)


@torch.no_grad()
def _chunked_logits_entropy(scored: Encoded, model, cfg: RefineConfig) -> torch.Tensor:
    """Entropies [B, S] (fp32) of an already-run forward, chunk by chunk: from its logits when it
    kept them, else from its hidden states through the LM head."""
    if scored.logits is None:
        return chunked_entropy(scored.hidden.detach(), output_head(model), cfg.logits_chunk, cfg.score_micro_batch)
    logits = scored.logits.detach()  # [B, S, V]
    step = logits.shape[1] if cfg.logits_chunk is None else cfg.logits_chunk
    return torch.cat([token_entropy(logits[:, lo : lo + step]) for lo in range(0, logits.shape[1], step)], dim=1)


class RefineMethod:
    """The REFINE update of REFINE.md §1 as a plug-in for `refine.train.loop.train`."""

    def __init__(self, cfg: RefineConfig, mode: str = "onepass"):
        if mode not in ("onepass", "reencode"):
            raise ValueError(f"mode: expected 'onepass' or 'reencode', got {mode!r}")
        if cfg.ppo_epochs != 1:
            raise ValueError(
                f"ppo_epochs: only 1 is supported (rollouts are on-policy), got {cfg.ppo_epochs}"
            )
        self.cfg = cfg
        self.mode = mode
        self.reward_fn = get_reward(cfg.reward)
        self.advantage_fn = get_advantage(cfg.advantage)

    @property
    def mini_batch_size(self) -> int | None:
        """Global rows per optimizer step (None: the whole batch); see the module docstring."""
        return self.cfg.mini_batch_size

    def local_mini_batch(self, local_rows: int) -> int:
        """Rows of this rank's mini-batches, for a shard of `local_rows` rows."""
        if self.cfg.mini_batch_size is None:
            return local_rows
        world = process_world_size()
        if self.cfg.mini_batch_size % world:
            raise ValueError(
                f"refine.mini_batch_size={self.cfg.mini_batch_size} must be divisible by the number "
                f"of processes (world_size={world}): it counts rows over all ranks"
            )
        return self.cfg.mini_batch_size // world

    @torch.no_grad()
    def score_and_select(self, model, input_ids, valid, scored: Encoded | None = None):
        """Steps 1–2: entropy + true hidden states [B, S, D] from a no-grad pass, then positions [B, c].

        `scored`: the forward of the first rows, already run (with grad; used detached); the
        no-grad pass then covers only the remaining rows. Memory is bounded by the config's
        `score_micro_batch` rows and `logits_chunk` positions (`refine.train.chunked`): no more
        than micro-batch x chunk x vocabulary logits exist in fp32 at once. The selection mode
        reads the smoothed entropy (`entropy`, `uniform`) or the raw one (`argmax`, `argmin`),
        see `refine.rl.positions.selection_scores`."""
        cfg = self.cfg
        hidden, entropy = [], []
        done = 0 if scored is None else scored.hidden.shape[0]
        if scored is not None:
            hidden.append(scored.hidden.detach())
            entropy.append(_chunked_logits_entropy(scored, model, cfg))
        if done < input_ids.shape[0]:
            h, e = score_pass(model, input_ids[done:], cfg.score_micro_batch, cfg.logits_chunk)
            hidden.append(h)
            entropy.append(e)
        entropy = torch.cat(entropy)  # [B, S] fp32
        scores = selection_scores(cfg.selection, entropy, cfg.window, valid_mask=valid)
        starts = select_positions(
            scores, valid, cfg.num_positions, cfg.rollout_len, cfg.margin, cfg.selection
        )  # [B, c]
        return torch.cat(hidden), entropy, starts

    def _grad_forward(self, model, input_ids, starts, recorded=None):
        """Grad forward: final hidden states [B, S, D] (with grad, and detached), states at the starts
        (B*c rows), first-token logits [B*c, V]. No [B, S, V] logits are made: the LM head runs on
        the B*c first-token rows here and per chunk in the NTP loss (`refine.train.chunked`).
        `recorded`: (Encoded, StateRecord) of this mini-batch's grad forward, if already run."""
        if self.mode == "onepass":
            if recorded is None and can_record(model):
                recorded = encode_recorded(model, input_ids, logits=False)
            if recorded is not None:
                enc, states = recorded[0], recorded[1].states_at(starts)
            else:
                enc = encode(model, input_ids, at=starts, logits=False)
                states = enc.states
        else:
            enc = encode(model, input_ids, logits=False)
            states = reencode_states(model, input_ids, starts)
        first_logits = output_head(model)(_gather_rows(enc.hidden, starts, -1, 1)[:, 0])  # [B*c, V]
        return enc.hidden, enc.hidden.detach(), states, first_logits

    def updates(self, model, batch) -> Iterator[tuple[torch.Tensor, dict[str, float] | None]]:
        """Per mini-batch, one loss per micro-batch: `(loss, None)` for all but the last, which
        carries the mini-batch's metrics (the loop's micro-batch contract, `refine.train.loop`)."""
        input_ids, labels = batch["input_ids"], batch["labels"]
        valid = batch["attention_mask"].bool()
        bsz = input_ids.shape[0]
        mb = self.local_mini_batch(bsz)
        micro = min(mb, self.cfg.micro_batch_size or mb)
        if self.cfg.select_per_mini_batch:  # each mini-batch selects from its own forward, at its own weights
            for lo in range(0, bsz, mb):
                sl = slice(lo, min(lo + mb, bsz))
                yield from self._select_and_update(model, input_ids[sl], labels[sl], valid[sl], micro)
            return
        yield from self._select_and_update(model, input_ids, labels, valid, micro, mb)

    def _select_and_update(self, model, input_ids, labels, valid, micro, mb=None):
        """Select the positions of these rows (one scoring), then update them in mini-batches of `mb` rows."""
        bsz = input_ids.shape[0]
        mb = mb or bsz
        recorded = None
        if self.mode == "onepass" and can_record(model):  # micro-batch 0's grad forward doubles as its score
            recorded = encode_recorded(model, input_ids[:micro], logits=False)
        _, entropy, starts = self.score_and_select(  # h_true comes from each micro-batch's own forward
            model, input_ids, valid, None if recorded is None else recorded[0]
        )
        for lo in range(0, bsz, mb):
            sl = slice(lo, min(lo + mb, bsz))
            yield from self._micro_batches(model, input_ids[sl], labels[sl], starts[sl], entropy[sl], micro, recorded)
            recorded = None

    def _micro_batches(self, model, input_ids, labels, starts, entropy, micro, recorded=None):
        """The losses of one mini-batch in micro-batches of `micro` rows, weighted so that they sum to
        the mini-batch's loss: the NTP term (a token-mean) by each micro-batch's share of the counted
        label tokens, the policy term (a token-mean over rows of c·n·k tokens each) by its share of
        the rows. The metrics (yielded with the last) are the same weighted means; the reward and
        advantage statistics are computed over the whole mini-batch's groups."""
        cfg, rows = self.cfg, input_ids.shape[0]
        counted = (labels[:, 1:] != -100).sum(dim=1)  # [rows], the NTP loss's counted targets
        total = max(int(counted.sum()), 1)
        metrics, grouped, advantages = {}, [], []
        for lo in range(0, rows, micro):
            sl = slice(lo, min(lo + micro, rows))
            l_ntp, l_pg, part, (g, a) = self._minibatch_update(
                model, input_ids[sl], labels[sl], starts[sl], entropy[sl], recorded
            )
            recorded = None
            token_share, row_share = int(counted[sl].sum()) / total, (sl.stop - lo) / rows
            for key, value in part.items():
                metrics[key] = metrics.get(key, 0.0) + value * (token_share if key == "ntp_loss" else row_share)
            grouped.append(g)
            advantages.append(a)
            loss = combined_loss(token_share * l_ntp, row_share * l_pg, cfg.lambda_ntp, cfg.lambda_pg)
            if sl.stop < rows:
                yield loss, None
        metrics.update({key: float(v) for key, v in reward_stats(torch.cat(grouped), torch.cat(advantages)).items()})
        yield loss, metrics

    def _minibatch_update(self, model, input_ids, labels, starts, entropy, recorded=None):
        """One (micro-)batch: (L_ntp, L_pg, metrics, (grouped rewards, advantages))."""
        cfg, n, k = self.cfg, self.cfg.num_rollouts, self.cfg.rollout_len
        bsz, c = starts.shape
        # (a) grad forward with states at the starts; (b) rollouts from detached states
        hidden, true_hidden_all, states, first_logits = self._grad_forward(model, input_ids, starts, recorded)
        roll = rollout_from_states(model, states, first_logits, cfg)
        # (c) rewards and advantages
        true_tokens = _gather_rows(input_ids, starts, 0, k).repeat_interleave(n, 0)  # [N, k]
        true_hidden = _gather_rows(true_hidden_all, starts, 0, k).repeat_interleave(n, 0)  # [N, k, D]
        rewards = self.reward_fn(roll.tokens, true_tokens, roll.hidden, true_hidden)  # [N]
        grouped = rewards.view(bsz, c, n) if n > 1 else rewards.view(bsz, c)
        grouped_adv = self.advantage_fn(grouped, norm_by_std=cfg.norm_adv_by_std)
        adv = grouped_adv.reshape(-1)  # [N]
        # (d) teacher-forced log-probs with grad through the prefix
        if self.mode == "onepass":
            logp = self._teacher_forced(model, states, first_logits, roll.tokens)
        else:
            logp = self._teacher_forced_reencode(model, input_ids, starts, roll.tokens)
        mask = torch.ones_like(logp)
        l_pg, pg_metrics = ppo_policy_loss(
            logp, logp.detach(), adv, mask, cfg.clip, cfg.clip, cfg.dual_clip
        )
        l_ntp, _, _ = chunked_next_token_loss(hidden, output_head(model), labels, cfg.logits_chunk)
        exact = (roll.tokens == true_tokens).float().mean()
        cos = torch.nn.functional.cosine_similarity(roll.hidden, true_hidden, dim=-1).mean()
        metrics = {
            "ntp_loss": float(l_ntp.detach()),
            "pg_loss": float(l_pg.detach()),
            "rollout_exact": float(exact),
            "rollout_cosine": float(cos),
            "entropy_selected": float(entropy.gather(1, starts - 1).mean()),
            "entropy_mean": float(entropy.mean()),
            "rollout_logp_abs_diff": float((logp.detach() - roll.logp).abs().mean()),
            **{f"pg_{key}": float(v) for key, v in pg_metrics.items()},
        }
        return l_ntp, l_pg, metrics, (grouped.detach(), grouped_adv.detach())

    def _teacher_forced(self, model, states, first_logits, tokens):
        n, k = self.cfg.num_rollouts, self.cfg.rollout_len
        temp = self.cfg.temperature
        logp_first = token_logprobs(first_logits.repeat_interleave(n, 0), tokens[:, 0], temp)  # [N]
        if k == 1:
            return logp_first[:, None]
        graph_states = map_states(states, lambda t: t.repeat_interleave(n, dim=0))
        rest = decode(model, graph_states, tokens[:, :-1]).logits  # [N, k-1, V]
        return torch.cat([logp_first[:, None], token_logprobs(rest, tokens[:, 1:], temp)], dim=1)

    def _teacher_forced_reencode(self, model, input_ids, starts, tokens):
        """Reference: re-encode prefix + rollout per (sequence, start, rollout), with grad."""
        n, k = self.cfg.num_rollouts, self.cfg.rollout_len
        rows = []
        for b in range(starts.shape[0]):
            for j, s in enumerate(starts[b].tolist()):
                for r in range(n):
                    seq = torch.cat([input_ids[b, :s], tokens[(b * starts.shape[1] + j) * n + r, :-1]])
                    logits = model(input_ids=seq[None], return_dict=True).logits[0, s - 1 :]  # [k, V]
                    rows.append(token_logprobs(logits, tokens[(b * starts.shape[1] + j) * n + r], self.cfg.temperature))
        return torch.stack(rows).view(-1, k)
