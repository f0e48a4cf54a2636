"""A learning test: a tiny DeltaNet on the CPU backend learns associative recall.

Equivalence tests show the CPU kernels compute the right values and gradients; this one shows
training with them actually learns the thing fast weights are for. Documents are multi-query
associative recall (Zoology's MQAR shape): 4 key-value pairs, then the 4 keys again in a random
order, each followed by its value; the loss covers every token, and the test measures the
accuracy on the queried values, which can only be predicted by recalling the pairs.
"""

import torch

from refine.models.registry import build_model
from refine.tracking import NullTracker
from refine.train.config import TrainConfig
from refine.train.loop import train
from refine.train.ntp import NTPMethod

NUM_KEYS, NUM_VALUES, PAIRS = 24, 24, 4
VOCAB = NUM_KEYS + NUM_VALUES


def mqar_rows(n: int, seed: int) -> torch.Tensor:
    """[n, 4 * PAIRS] token ids: k1 v1 ... k4 v4 then the keys shuffled, each with its value."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.stack([torch.randperm(NUM_KEYS, generator=g)[:PAIRS] for _ in range(n)])
    values = NUM_KEYS + torch.randint(0, NUM_VALUES, (n, PAIRS), generator=g)
    order = torch.stack([torch.randperm(PAIRS, generator=g) for _ in range(n)])
    context = torch.stack([keys, values], dim=-1).flatten(1)  # [n, 2*PAIRS]
    queries = torch.stack([keys.gather(1, order), values.gather(1, order)], dim=-1).flatten(1)
    return torch.cat([context, queries], dim=1)


def recall_accuracy(model, rows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=rows).logits  # [n, T, V]
    answer_pos = torch.arange(2 * PAIRS + 1, 4 * PAIRS, 2)  # positions of queried values
    pred = logits[:, answer_pos - 1].argmax(-1)
    return (pred == rows[:, answer_pos]).float().mean().item()


def test_tiny_deltanet_learns_associative_recall(tmp_path):
    torch.manual_seed(0)
    model = build_model("delta_net", VOCAB, {"hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2})
    rows = mqar_rows(4096, seed=0)
    dataset = [{"input_ids": r, "labels": r.clone(), "attention_mask": torch.ones_like(r)} for r in rows]
    heldout = mqar_rows(256, seed=1)
    before = recall_accuracy(model, heldout)
    cfg = TrainConfig(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0, warmup_steps=20, max_steps=600,
                      batch_size=32, checkpoint_every=600, log_every=100)  # fmt: skip
    train(model, NTPMethod(), dataset, cfg, tmp_path, NullTracker())
    after = recall_accuracy(model, heldout)
    # chance is 1/24 ≈ 4%; recall needs the fast-weight memory
    assert before < 0.15
    assert after > 0.9, f"recall accuracy {after:.2f} after 600 steps"
