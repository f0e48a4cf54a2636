"""Probe the default study's pretraining recipe: pretrain a tiny model, then sweep RULER NIAH.

Pretrains one tiny model (`refine.models.registry.build_model`) with the real training loop
(`refine.train.loop.train`, `NTPMethod`) on documents from the real generator
(`refine.data.corpus`), tokenized by the word tokenizer built from `vocabulary_texts`, then scores
greedy decoding (`refine.eval.generate.greedy_generate`) on RULER NIAH prompts
(`refine.data.ruler.generate_niah`, noise haystack, the corpus key pool, 3-digit values) with
RULER's `string_match_all`, per variant and context length; a LaCT model is swept again with its fast-weight updates off
(`refine.eval.ablation.fast_weights_frozen`). With `--suites`, it also scores the synthetic RULER-QA
items (`refine.data.ruler_qa`, built as `refine.eval.data` builds them, scored by the `qa` suite) and
the synthetic LongBench-format suite (`refine.data.synthetic_longbench`, the `longbench` suite's items
and official metrics; `--lb-*` as eval.longbench). Prints the tables and writes a JSON file.

An optional first phase (`--phase1-steps`) pretrains on short dense documents before the main
phase, to compare a two-phase curriculum with the mixed single-length split.

Example (1 torch thread, ~8 minutes of training):
    OMP_WAIT_POLICY=PASSIVE python tools/probe_default_study.py --arch delta_net --steps 3000 \\
        --seq-len 256 --batch-size 8 --segment-tokens 32 \\
        --kind-weights '{"recall": 0.5, "kvlist": 0.1, "niah": 0.4}' --out results/probe/dn.json

A LaCT whose retrieval must go through its fast weights (issue 16: window = chunk = 16 on 32-token
documents; swept with its fast-weight updates on and off):
    OMP_WAIT_POLICY=PASSIVE python tools/probe_default_study.py --arch lact --steps 1500 --seq-len 32 \
        --batch-size 32 --kind-weights '{"recall": 1.0}' --num-docs 50000 --template compact \
        --model-config '{"window_size": 16, "lact_chunk_size": 16, "use_muon": false, "ttt_nope": true,
                         "tie_word_embeddings": true}' \
        --lengths 64 128 256 512 1024 --variants niah_single_1 niah_single_2 --samples 20 --out results/probe/lact.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no busy-waiting on a shared machine

import torch  # noqa: E402

from refine.config import REPO_ROOT, read_config_file  # noqa: E402
from refine.data.build import eval_vocabulary_texts  # noqa: E402
from refine.data.corpus import DENSE_KINDS, CorpusConfig, generate_documents, vocabulary_texts  # noqa: E402
from refine.data.dataset import TokenDataset, write_token_dataset  # noqa: E402
from refine.data.ruler import NIAH_VARIANTS, TEMPLATES, generate_niah  # noqa: E402
from refine.data.tokenizer import build_word_tokenizer  # noqa: E402
from refine.eval.ablation import fast_weights_frozen  # noqa: E402
from refine.eval.generate import greedy_generate  # noqa: E402
from refine.eval.longbench import truncate_middle  # noqa: E402
from refine.eval.scoring import string_match_all  # noqa: E402
from refine.models.registry import build_model  # noqa: E402
from refine.names import ARCHITECTURES  # noqa: E402
from refine.tracking import NullTracker  # noqa: E402
from refine.train.config import TrainConfig  # noqa: E402
from refine.train.config import train_config as study_train_config  # noqa: E402
from refine.train.loop import train  # noqa: E402
from refine.train.ntp import NTPMethod  # noqa: E402

log = logging.getLogger("probe")
DEFAULT_STUDY = REPO_ROOT / "config" / "config.yaml"  # whose pretraining recipe is probed
SHORT = {
    "niah_single_1": "S1",
    "niah_single_2": "S2",
    "niah_single_3": "S3",
    "niah_multikey_1": "MK1",
    "niah_multikey_2": "MK2",
    "niah_multikey_3": "MK3",
    "niah_multiquery": "MQ",
    "niah_multivalue": "MV",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=ARCHITECTURES, required=True)
    p.add_argument("--model-config", default="{}", help="JSON overrides of the tiny model config")
    p.add_argument("--steps", type=int, help="optimizer steps of the main phase")
    p.add_argument("--minutes", type=float, help="or: training minutes, converted to steps by timing")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-docs", type=int, default=40_000)
    p.add_argument("--kind-weights", default='{"recall": 0.5, "kvlist": 0.1, "niah": 0.4}')
    p.add_argument("--segment-tokens", type=int)
    p.add_argument("--corpus", default="{}", help="JSON: further CorpusConfig fields")
    p.add_argument("--phase1-steps", type=int, default=0, help="steps on short dense documents first")
    p.add_argument("--phase1-seq-len", type=int, default=32)
    p.add_argument("--phase1-batch-size", type=int, default=32)
    p.add_argument("--phase1-num-docs", type=int, help="documents of the first phase (default: --num-docs)")
    p.add_argument("--phase1-kind-weights", help="JSON kind weights of the first phase (default: the main "
                   "phase's dense kinds)")
    p.add_argument("--lr", type=float, help="peak learning rate of the main phase (default: the study's "
                   "pretrain.train.lr)")
    p.add_argument("--warmup", type=int, help="warm-up steps (default: the study's pretrain.train.warmup_steps)")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--variants", nargs="+", default=list(NIAH_VARIANTS))
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--tokens-to-generate", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=20)
    p.add_argument("--probe-every", type=int, default=250, help="steps between quick NIAH checks")
    p.add_argument("--template", choices=TEMPLATES, default=TEMPLATES[0], help="NIAH prompt wording")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    p.add_argument("--suites", action="store_true", help="also score synthetic RULER-QA and LongBench-format items")
    p.add_argument("--qa-lengths", type=int, nargs="+", default=[256, 512])
    p.add_argument("--qa-samples", type=int, default=40)
    p.add_argument("--qa-max-new-tokens", type=int, default=8)
    p.add_argument("--lb-records", type=int, default=4, help="records per LongBench-format task")
    p.add_argument("--lb-context-words", type=int, default=200)
    p.add_argument("--lb-max-length", type=int, default=1024, help="eval.longbench.model_max_length")
    p.add_argument("--lb-cap", type=int, default=16, help="eval.longbench.max_new_tokens_cap")
    return p.parse_args()


def train_config(steps: int, batch_size: int, lr: float | None, warmup: int | None, seed: int) -> TrainConfig:
    """The default study's pretraining recipe, read from `config/config.yaml` `pretrain.train` (FEASIBILITY's:
    AdamW 3e-3, betas 0.9/0.95, wd 0.1, warm-up, linear decay over the last quarter), with this probe's
    steps, batch size and seed; `lr`/`warmup` None: the study's."""
    recipe = study_train_config(read_config_file(DEFAULT_STUDY), "pretrain.train", str(DEFAULT_STUDY))
    warmup = recipe.warmup_steps if warmup is None else warmup
    return replace(recipe, lr=recipe.lr if lr is None else lr, warmup_steps=min(warmup, steps), max_steps=steps,
                   batch_size=batch_size, seed=seed, checkpoint_every=10**9, bf16=False)  # fmt: skip


def write_split(cfg: CorpusConfig, n_docs: int, seed: int, tokenizer, path: Path) -> TokenDataset:
    started = time.perf_counter()
    docs = generate_documents(cfg, n_docs, seed)
    write_token_dataset(docs, tokenizer, cfg.doc_tokens, path)
    log.info("%d documents of %d tokens in %.1fs", n_docs, cfg.doc_tokens, time.perf_counter() - started)
    return TokenDataset(path)


def steps_for_minutes(model, dataset: TokenDataset, batch_size: int, minutes: float) -> int:
    """Optimizer steps that fit in `minutes`, from the time of 10 steps after 3 warm-up steps."""
    probe = build_model_like(model)
    cfg = train_config(13, batch_size, 1e-3, 0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        final = train(probe, NTPMethod(), dataset, cfg, tmp, NullTracker())
    per_step = final["wall_time_s"] / 13
    return max(1, int(minutes * 60 / per_step))


def build_model_like(model):
    return type(model)(model.config)


@torch.no_grad()
def niah_sweep(model, tokenizer, cfg: CorpusConfig, args, variants=None, lengths=None, samples=None) -> dict:
    """{variant: {length: mean string_match_all in %, or None where the template does not fit}}."""
    model.eval()
    table: dict[str, dict[int, float | None]] = {}
    for variant in variants or args.variants:
        table[variant] = {}
        for length in lengths or args.lengths:
            try:
                records = generate_niah(
                    variant,
                    length,
                    samples or args.samples,
                    tokenizer,
                    seed=12345,
                    key_pool=list(cfg.keys),
                    value_digits=cfg.niah_value_digits,
                    tokens_to_generate=args.tokens_to_generate,
                    template=args.template,
                )
            except ValueError:  # the length cannot hold the template
                table[variant][length] = None
                continue
            outputs = greedy_generate(
                model,
                tokenizer,
                [r["input"] for r in records],
                args.tokens_to_generate,
                args.eval_batch_size,
                stop_strings=["\n"],
            )
            scores = [string_match_all(o, r["outputs"]) for o, r in zip(outputs, records, strict=True)]
            table[variant][length] = 100 * sum(scores) / len(scores)
            log.info("%s@%d: %.1f  e.g. %r -> %r", variant, length, table[variant][length],
                     records[0]["outputs"], outputs[0])  # fmt: skip
    return table


@torch.no_grad()
def _decode_items(model, tokenizer, items, batch_size: int) -> list[str]:
    """Greedy predictions of suite items, prompts middle-truncated to their `prompt_token_limit` as the
    evaluation's `budget` protocol does; one generate call per (budget, stop strings)."""
    prompts = [it.prompt if it.prompt_token_limit is None else tokenizer.decode(
        truncate_middle(tokenizer(it.prompt, add_special_tokens=False)["input_ids"], it.prompt_token_limit))
        for it in items]  # fmt: skip
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.max_new_tokens, tuple(it.stop_strings)), []).append(i)
    out: dict[int, str] = {}
    for (budget, stops), idx in groups.items():
        preds = greedy_generate(model, tokenizer, [prompts[i] for i in idx], budget, batch_size,
                                stop_strings=list(stops) or None)  # fmt: skip
        out.update(zip(idx, preds, strict=True))
    return [out[i] for i in range(len(items))]


def suite_sweep(model, tokenizer, cfg: CorpusConfig, args, work: Path) -> dict:
    """{"qa": {"len<L>": % substring match}, "longbench": {task: official score, "Avg": mean}} on the
    evaluation's generators and seeds (refine.eval.data) and the suites' scoring (refine.eval.suites)."""
    from refine.data.jsonl import write_jsonl
    from refine.data.longbench_spec import PAPER_TASKS
    from refine.data.ruler_qa import build_ruler_qa, synthetic_qa_corpus
    from refine.data.synthetic_longbench import write_synthetic_longbench
    from refine.eval.data import QA_TEST_SEED
    from refine.eval.suites import get_suite, longbench_items, qa_items

    model.eval()
    result: dict[str, dict[str, float]] = {"qa": {}, "longbench": {}}
    corpus = synthetic_qa_corpus(list(cfg.keys), max(args.qa_samples, 64), QA_TEST_SEED, cfg.qa_facts)
    qa = get_suite("qa")
    for length in args.qa_lengths:
        records = build_ruler_qa(corpus, length, args.qa_samples, tokenizer, QA_TEST_SEED + length,
                                 tokens_to_generate=args.qa_max_new_tokens)  # fmt: skip
        for rec in records:
            rec.update(context_length=length, dataset="synthetic")
        write_jsonl(records, work / f"qa{length}.jsonl")
        items = qa_items(work / f"qa{length}.jsonl")
        preds = _decode_items(model, tokenizer, items, args.eval_batch_size)
        result["qa"][f"len{length}"] = 100 * sum(qa.score(i, p) for i, p in zip(items, preds, strict=True)) / len(items)
        log.info("qa@%d: %.1f  e.g. %r -> %r", length, result["qa"][f"len{length}"], items[0].answers, preds[0])
    lb = get_suite("longbench")
    write_synthetic_longbench(work / "longbench", list(cfg.keys), records_per_task=args.lb_records,
                              context_words=args.lb_context_words, seed=0)  # fmt: skip
    items = longbench_items(work / "longbench", list(PAPER_TASKS), args.lb_max_length, args.lb_cap)
    preds = _decode_items(model, tokenizer, items, args.eval_batch_size)
    rows = [{"prediction": p, "score": lb.score(i, p)} for i, p in zip(items, preds, strict=True)]
    metrics = lb.aggregate(items, rows)
    result["longbench"] = {k.split("/")[0] if k != "avg/score" else "Avg": v for k, v in metrics.items()}
    log.info("longbench: %s", result["longbench"])
    return result


def format_table(table: dict, lengths: list[int]) -> str:
    lines = ["| variant | " + " | ".join(map(str, lengths)) + " |", "|---" * (len(lengths) + 1) + "|"]
    for variant, row in table.items():
        cells = ["—" if row[n] is None else f"{row[n]:.0f}" for n in lengths]
        lines.append(f"| {SHORT.get(variant, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    cfg = CorpusConfig(
        doc_tokens=args.seq_len,
        kind_weights=json.loads(args.kind_weights),
        segment_tokens=args.segment_tokens,
        **json.loads(args.corpus),
    )
    work = Path(tempfile.mkdtemp(prefix="probe-"))
    # as `refine data` builds it (refine.data.build): the corpus's pieces and the evaluation prompts' words
    tokenizer = build_word_tokenizer(vocabulary_texts(cfg) + eval_vocabulary_texts(), work / "tokenizer")
    model = build_model(args.arch, len(tokenizer), json.loads(args.model_config))
    n_params = sum(p.numel() for p in model.parameters())
    phases = []
    if args.phase1_steps:
        dense = {k: w for k, w in cfg.kind_weights.items() if k in DENSE_KINDS} or {"recall": 1.0}
        dense = json.loads(args.phase1_kind_weights) if args.phase1_kind_weights else dense
        segment = args.segment_tokens if args.segment_tokens and args.segment_tokens < args.phase1_seq_len else None
        short = CorpusConfig(doc_tokens=args.phase1_seq_len, kind_weights=dense, segment_tokens=segment,
                             **json.loads(args.corpus))  # fmt: skip
        data = write_split(short, args.phase1_num_docs or args.num_docs, args.seed, tokenizer, work / "phase1.npy")
        phases.append(("phase1", data, args.phase1_steps, args.phase1_batch_size))
    data = write_split(cfg, args.num_docs, args.seed + 1, tokenizer, work / "main.npy")
    steps = args.steps or steps_for_minutes(model, data, args.batch_size, args.minutes)
    phases.append(("main", data, steps, args.batch_size))

    curve = []

    def quick_check(model) -> dict[str, float]:  # a learning curve: S1/MK1/MQ at the first length
        quick = ["niah_single_1", "niah_multikey_1", "niah_multiquery"]
        table = niah_sweep(model, tokenizer, cfg, args, quick, args.lengths[:1], samples=12)
        row = {f"niah_{SHORT[v]}": t[args.lengths[0]] for v, t in table.items() if t[args.lengths[0]] is not None}
        done = len([c for c in curve if c["phase"] == name])
        step = min((done + 1) * args.probe_every, n_steps)  # checks run every probe_every steps and last
        curve.append({"phase": name, "step": step, **row})
        log.info("quick check (%s, step %d): %s", name, step, row)
        return row

    trained = []
    for name, dataset, n_steps, batch_size in phases:
        lr = args.lr if name == "main" else None  # --lr: the main phase's; the first phase keeps the study's
        tcfg = replace(train_config(n_steps, batch_size, lr, args.warmup, args.seed),
                       eval_every=args.probe_every)  # fmt: skip
        cpu_started = time.process_time()
        final = train(model, NTPMethod(), dataset, tcfg, work / name, NullTracker(), evaluate=quick_check)
        final["cpu_s"] = time.process_time() - cpu_started  # incl. the quick checks
        if name == "phase1" and args.suites:  # what the first phase alone gives
            final["suites"] = suite_sweep(model, tokenizer, cfg, args, work)
        trained.append({"phase": name, "seq_len": dataset.seq_len, "batch_size": batch_size, **final})
        log.info("%s: %d steps, %.0f tokens, %.0fs, loss %.3f", name, n_steps, final["tokens"],
                 final["wall_time_s"], final["loss"])  # fmt: skip
    eval_started = time.perf_counter()
    table = niah_sweep(model, tokenizer, cfg, args)
    frozen = None
    if args.arch == "lact":  # the fast-weight ablation (refine.eval.ablation): the same sweep, updates off
        with fast_weights_frozen(model):
            frozen = niah_sweep(model, tokenizer, cfg, args)
    suites = suite_sweep(model, tokenizer, cfg, args, work) if args.suites else None
    result = {
        "suites": suites,
        "work_dir": str(work),  # tokenizer/ and <phase>/model/ of the trained models (tools/probe_qa_transfer.py)
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "corpus": {k: v for k, v in vars(cfg).items()},
        "params": n_params,
        "vocab": len(tokenizer),
        "phases": trained,
        "train_wall_s": sum(p["wall_time_s"] for p in trained),
        "train_tokens": sum(p["tokens"] for p in trained),
        "train_cpu_s": sum(p["cpu_s"] for p in trained),
        "curve": curve,
        "eval_wall_s": time.perf_counter() - eval_started,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "niah": {v: {str(n): s for n, s in row.items()} for v, row in table.items()},
        "niah_fast_weights_frozen": frozen and {v: {str(n): s for n, s in row.items()} for v, row in frozen.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{args.arch}: {n_params / 1e6:.2f}M params, train {result['train_wall_s']:.0f}s "
          f"({result['train_cpu_s']:.0f} CPU-s), "
          f"{result['train_tokens'] / 1e6:.2f}M tokens, eval {result['eval_wall_s']:.0f}s, "
          f"load {load_before[0]:.1f}->{result['loadavg_after'][0]:.1f}")  # fmt: skip
    print(format_table(table, args.lengths))
    if suites is not None:
        print("QA: " + ", ".join(f"{k} {v:.1f}" for k, v in suites["qa"].items()))
        print("LongBench-format: " + ", ".join(f"{k} {v:.1f}" for k, v in suites["longbench"].items()))
    if frozen is not None:
        print("fast-weight updates off (refine.eval.ablation.fast_weights_frozen):")
        print(format_table(frozen, args.lengths))


if __name__ == "__main__":
    main()
