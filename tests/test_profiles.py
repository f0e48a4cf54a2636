"""The SLURM profile (profiles/slurm): it names only rules that exist, gives every GPU rule
a GPU, and `snakemake -n all --profile profiles/slurm` parses and plans the whole study
with those resources (a dry run submits nothing; it needs snakemake-executor-plugin-slurm)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm"


def rule_names() -> set[str]:
    files = (ROOT / "workflow" / "rules").glob("*.smk")
    return {name for f in files for name in re.findall(r"^rule (\w+):", f.read_text(), re.M)}


def gpu_rules() -> set[str]:
    """Rules whose resources name a GPU (`gpu=GPU_PER_JOB`)."""
    found = set()
    for f in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule )", f.read_text(), flags=re.M):
            match = re.match(r"rule (\w+):", block)
            if match and re.search(r"^\s+gpu=", block, re.M):
                found.add(match.group(1))
    return found


def test_profile_names_existing_rules_and_gives_every_gpu_rule_a_gpu():
    profile = yaml.safe_load((PROFILE / "profile.yaml").read_text())
    assert profile["executor"] == "slurm"
    defaults = profile["default-resources"]
    assert {"runtime", "mem_mb", "cpus_per_task", "slurm_partition", "slurm_account"} <= defaults.keys()
    per_rule = profile["set-resources"]
    assert set(per_rule) <= rule_names()
    assert gpu_rules() and gpu_rules() <= {rule for rule, res in per_rule.items() if res.get("gpu", 0) >= 1}


def test_dry_run_plans_the_study_with_the_profile(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    command = [
        sys.executable, "-m", "snakemake", "-n", "all", "--profile", "profiles/slurm", "--workflow-profile", "none",
        "--config", f"results_dir={tmp_path / 'results'}", "device=cuda",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Using profile profiles/slurm" in log
    jobs = {}  # rule -> resources line of its first job
    for block in re.split(r"^(?=rule \w+:)", log, flags=re.M):
        match = re.match(r"rule (\w+):", block)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        if match and resources:
            jobs.setdefault(match.group(1), resources.group(1))
    assert {"pretrain", "midtrain"} <= jobs.keys()
    for rule in gpu_rules() & jobs.keys():
        assert "gpu=1" in jobs[rule] and "slurm_partition=CHANGE_ME_gpu" in jobs[rule], rule
    assert "runtime=1440" in jobs["midtrain"] and "cpus_per_task=16" in jobs["midtrain"]
    cpu_only = [rule for rule in jobs if rule.startswith("report_")]
    assert cpu_only and all("gpu=" not in jobs[rule] for rule in cpu_only)


def test_every_cluster_profile_names_only_existing_rules_and_the_same_ones():
    """profiles/slurm and profiles/rehearsal size the same rules, all of which exist (a renamed
    or split rule must be renamed in both)."""
    per_rule = {}
    for name in ("slurm", "rehearsal"):
        profile = yaml.safe_load((ROOT / "profiles" / name / "profile.yaml").read_text())
        per_rule[name] = set(profile["set-resources"])
        assert per_rule[name] <= rule_names(), (name, per_rule[name] - rule_names())
    assert per_rule["slurm"] == per_rule["rehearsal"]


def _flat(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


# What a 2-core CPU node requires of the cluster profile, and nothing else (profiles/rehearsal's header).
REHEARSAL_MAY_DIFFER = (
    "slurm-init-seconds-before-status-checks",  # jobs of seconds, not hours
    "default-resources.slurm_partition",
    "default-resources.slurm_account",
    "default-resources.mem_mb",
    "default-resources.cpus_per_task",
    "set-resources.*.slurm_partition",  # no GPU partition
    "set-resources.*.gpu",  # no gres on a CPU node
    "set-resources.*.mem_mb",
    "set-resources.*.cpus_per_task",
)


def test_rehearsal_profile_differs_from_the_cluster_profile_only_where_a_cpu_node_requires():
    from fnmatch import fnmatchcase

    slurm = _flat(yaml.safe_load((ROOT / "profiles" / "slurm" / "profile.yaml").read_text()))
    rehearsal = _flat(yaml.safe_load((ROOT / "profiles" / "rehearsal" / "profile.yaml").read_text()))
    differ = {k for k in slurm.keys() | rehearsal.keys() if slurm.get(k) != rehearsal.get(k)}
    outside = sorted(k for k in differ if not any(fnmatchcase(k, p) for p in REHEARSAL_MAY_DIFFER))
    assert not outside, {k: (slurm.get(k), rehearsal.get(k)) for k in outside}
    assert not any(k.endswith(".gpu") for k in rehearsal), "a CPU node has no GPU gres"
    assert rehearsal["executor"] == "slurm"
