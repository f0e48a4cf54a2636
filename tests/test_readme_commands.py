"""Every `snakemake` command README.md shows works as printed (issue 13).

The commands are taken from the README's code blocks and inline code spans (spans may wrap
across lines; `a && b`, `a; b` and trailing `# comments` are split off), and each runs as a dry
run (`-n` added after `snakemake`) in a copy of the workflow in a scratch folder, so every
`results/...` path of the command and the config lands there. Not run: commands with a
`<placeholder>`, `--report` (it needs a finished study) and `--lint` (CI runs it); the SLURM
profile's command needs snakemake-executor-plugin-slurm.
"""

import re
import shlex
from importlib.util import find_spec
from pathlib import Path

import pytest
from workflow_fakes import ROOT, copy_workflow, snakemake

SKIP = ("--report", "--lint")


def readme_snakemake_commands(text: str) -> list[list[str]]:
    """The `snakemake` commands of a Markdown text, as argument lists, in order, without repeats."""
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    lines = [line for block in fence.findall(text) for line in block.splitlines()]
    prose = fence.sub("", text)
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`\n]+(?:\n[^`\n]+)*)`", prose)]
    commands = []
    for line in lines:
        for part in re.split(r"&&|\|\||;", line):
            if not part.split() or part.split()[0] != "snakemake":  # prose in a code block need not parse
                continue
            words = shlex.split(part, comments=True)
            if words and words[0] == "snakemake" and words not in commands:
                commands.append(words)
    return commands


def test_extraction_finds_block_inline_and_wrapped_commands():
    text = (
        "```bash\npip install -e . && snakemake -j4 all   # run it\n```\n"
        "Run `snakemake results/x.csv` or `snakemake -n --configfile\nconfig/p.yaml all`; not `refine data`.\n"
    )
    assert readme_snakemake_commands(text) == [
        ["snakemake", "-j4", "all"],
        ["snakemake", "results/x.csv"],
        ["snakemake", "-n", "--configfile", "config/p.yaml", "all"],
    ]


COMMANDS = readme_snakemake_commands((ROOT / "README.md").read_text())


def test_the_readme_shows_the_commands_this_test_runs():
    runnable = [c for c in COMMANDS if not any(s in c for s in SKIP) and not any("<" in w for w in c)]
    assert len(runnable) >= 5 and ["snakemake", "-j4", "all"] in runnable


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    wf = copy_workflow(tmp_path_factory.mktemp("readme") / "wf")
    import shutil

    shutil.copytree(ROOT / "profiles", wf / "profiles")
    return wf


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[1:]) or "snakemake" for c in COMMANDS])
def test_readme_command_plans_as_printed(command, workflow_copy):
    if any(s in command for s in SKIP) or any("<" in w for w in command):
        pytest.skip("placeholder, --report or --lint: not a planning command")
    if "profiles/slurm" in command and find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("needs snakemake-executor-plugin-slurm")
    if "config/rehearsal.yaml" in command:
        pytest.skip("needs the rehearsal's assets under results/: tests/test_rehearsal.py runs it for real (slow)")
    dry = [] if "-n" in command or "--dry-run" in command else ["-n"]
    done = snakemake([*dry, *command[1:]], workflow_copy, timeout=180, profile=True)  # exactly as printed, + -n
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stderr[-2500:]}"
    assert "Nothing to be done" in done.stdout + done.stderr or "Job stats" in done.stdout + done.stderr
    assert not (workflow_copy / "results").exists(), "a dry run created results/"
