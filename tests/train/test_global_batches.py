"""Global batch sizes: `batch_size` and REFINE's `mini_batch_size` count rows over all training
processes, and a config whose sizes do not split over the job's processes is rejected when it is
loaded (naming the key) and again when a run starts under torchrun. The 2-process step counts
themselves are tested in test_distributed.py (test_global_mini_batches_give_the_same_optimizer_steps_per_batch)."""

import pytest
import yaml

from refine.config import REPO_ROOT, ConfigError, merge_config_files
from refine.study import validate_config
from refine.train.config import check_world_size, training_processes


def _study(mini_batch_size=32, batch_size=128):
    return {
        "midtrain": {
            "sft": {"train": {"batch_size": 128}},
            "refine": {"train": {"batch_size": batch_size}, "refine": {"mini_batch_size": mini_batch_size}},
        },
        "posttrain": {"max_answer_tokens": 32, "nested_refine": {"train": {"batch_size": 32}, "refine": {}}},
    }


def test_sizes_that_do_not_split_over_the_processes_name_their_key():
    check_world_size(_study(), 8)  # the paper's 128 / 32 over 8 GPUs
    with pytest.raises(ValueError, match=r"^midtrain\.refine\.refine\.mini_batch_size=12 is not divisible by the 8"):
        check_world_size(_study(mini_batch_size=12), 8)
    with pytest.raises(ValueError, match=r"^midtrain\.refine\.train\.batch_size=36 "):
        check_world_size(_study(batch_size=36), 8)
    check_world_size(_study(mini_batch_size=12), 4)
    check_world_size(_study(mini_batch_size=12), 8, sections=["midtrain.sft"])  # only the stage that runs


def test_training_processes_follow_the_workflow_launch_rule():
    assert training_processes({"device": "cuda", "gpus_per_job": 8, "procs_per_job": None}) == 8
    assert training_processes({"device": "cpu", "gpus_per_job": 8, "procs_per_job": None}) == 1
    assert training_processes({"device": "cpu", "gpus_per_job": 1, "procs_per_job": 2}) == 2


def _paper(**top):
    cfg = merge_config_files([REPO_ROOT / "config" / "config.yaml", REPO_ROOT / "config" / "paper.yaml"])
    return {**cfg, **top}


def test_the_paper_config_splits_over_its_gpus_and_a_bad_count_fails_at_load():
    validate_config(_paper(), "paper")  # 8 GPUs: 8 (x grad_accum 16) / 8 (x 4) / 128 / 32 / 32 all divisible
    with pytest.raises(ConfigError, match=r"midtrain\.sft\.train\.batch_size=8 is not divisible by the 3"):
        validate_config(_paper(gpus_per_job=3), "paper")


def test_the_rehearsal_config_splits_over_its_processes():
    rehearsal = REPO_ROOT / "config" / "rehearsal.yaml"
    if not rehearsal.exists():
        pytest.skip("config/rehearsal.yaml not present")
    procs = yaml.safe_load(rehearsal.read_text()).get("procs_per_job")
    cfg = merge_config_files([REPO_ROOT / "config" / "config.yaml", rehearsal])
    assert training_processes(validate_config(cfg, "rehearsal", check_paths=False)) == procs
