"""Post-training on RULER-format QA items (REFINE.md §2): SFT, Nested SFT, Nested REFINE.

Data: `QADataset` turns items {input: prompt, outputs: gold answers} into rows of
prompt + answer tokens (the first gold answer, at most `max_answer_tokens` = 32 target tokens,
no EOS appended, as in the authors' release), right-padded, with `labels` on the answer tokens
only and a `context_mask` on the prompt. (Evaluation stops answers at a newline or the generation
budget, so the model is not trained to emit EOS; `append_eos=True` restores an EOS target, which
then counts inside the `max_answer_tokens` budget.)

Methods (plug-ins of the shared loop; each yielded loss with metrics is one optimizer step; the
inner REFINE update with `micro_batch_size` yields its micro-batches' losses before it, metrics None,
so they join its step, `refine.train.loop`):
- `sft`: outer step only — cross-entropy on the answer tokens;
- `nested_sft`: inner NTP step on the prompt context, then the outer answer step;
- `nested_refine`: inner REFINE update (§1, hybrid reward, λ_pg 0.2) on the prompt context,
  then the outer answer step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset

from refine.data.tokenizer import continuation_ids
from refine.names import POST_METHODS
from refine.train.ntp import NTPMethod

POSTTRAIN_METHODS = POST_METHODS  # refine.names


class QADataset(Dataset):
    """Rows of prompt + answer. Each item: input_ids, labels (answer only), attention_mask,
    context_mask — LongTensors [T] (T = the row's own length; the loop's collate right-pads)."""

    def __init__(
        self,
        records: list[dict],
        tokenizer,
        max_answer_tokens: int = 32,
        max_len: int | None = None,
        append_eos: bool = False,
    ):
        self.rows = []
        for i, rec in enumerate(records):
            for name in ("input", "outputs"):
                if name not in rec:
                    raise ValueError(f"QA record {i}: missing field {name!r}")
            prompt = tokenizer(rec["input"], add_special_tokens=False)["input_ids"]
            answer = continuation_ids(tokenizer, rec["input"], str(rec["outputs"][0]))
            if append_eos and tokenizer.eos_token_id is not None:
                answer = answer[: max_answer_tokens - 1] + [tokenizer.eos_token_id]
            else:
                answer = answer[:max_answer_tokens]
            if max_len is not None:
                prompt = prompt[-(max_len - len(answer)) :]
            ids = torch.tensor(prompt + answer, dtype=torch.long)
            labels = ids.clone()
            labels[: len(prompt)] = -100
            context = torch.zeros_like(ids)
            context[: len(prompt)] = 1
            self.rows.append(
                {
                    "input_ids": ids,
                    "labels": labels,
                    "attention_mask": torch.ones_like(ids),
                    "context_mask": context,
                }
            )
        if not self.rows:
            raise ValueError("QA dataset is empty")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def context_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The prompt part of a QA batch as an NTP batch (labels and valid span on the prompt only)."""
    ctx = batch["context_mask"].bool()
    labels = torch.where(ctx, batch["input_ids"], torch.full_like(batch["input_ids"], -100))
    return {"input_ids": batch["input_ids"], "labels": labels, "attention_mask": ctx.long()}


class NestedMethod:
    """Inner update(s) on the prompt context (NTP or REFINE, or none), then one answer-SFT step."""

    def __init__(self, inner=None):
        self.inner = inner
        self.outer = NTPMethod()

    @property
    def mini_batch_size(self) -> int | None:
        """The inner method's global mini-batch (the loop shards by it; the outer step takes the batch)."""
        return getattr(self.inner, "mini_batch_size", None)

    def updates(self, model, batch) -> Iterator[tuple[torch.Tensor, dict[str, float]]]:
        if self.inner is not None:
            for loss, metrics in self.inner.updates(model, context_batch(batch)):  # metrics None: a micro-batch
                yield loss, None if metrics is None else {f"inner_{k}": v for k, v in metrics.items()}
        answer_batch = {k: batch[k] for k in ("input_ids", "labels", "attention_mask")}
        for loss, metrics in self.outer.updates(model, answer_batch):
            yield loss, {f"answer_{k}": v for k, v in metrics.items()}


def posttrain_method(name: str, refine_cfg=None) -> NestedMethod:
    if name == "sft":
        return NestedMethod(None)
    if name == "nested_sft":
        return NestedMethod(NTPMethod())
    if name == "nested_refine":
        from refine.train.refine import RefineMethod

        if refine_cfg is None:
            raise ValueError("nested_refine needs a RefineConfig (posttrain.nested_refine.refine)")
        return NestedMethod(RefineMethod(refine_cfg))
    raise ValueError(f"--method: expected one of {POSTTRAIN_METHODS}, got {name!r}")
