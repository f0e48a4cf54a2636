#!/usr/bin/env bash
# The GPU check, in one go (under 8 minutes on one H200): the GPU-marked tests, then one paper-size
# measurement. Run from anywhere; it works in the repository root.
#
#   bash tools/gpu_check.sh            # results in $OUT, else results/gpu_check
#   GPU_CHECK_PARTS=measure bash tools/gpu_check.sh   # a rerun of one part: "tests", "measure" or both
#
# 1. Wheels. The device image has torch, triton, transformers, pytest, but not fla nor this project's
#    other imports (and its transformers may be too old for fla 0.6.0), so carry them as wheels in
#    `.whl` (ignored: `echo /.whl/ >> .git/info/exclude`), filled once on the development machine with
#    (Python 3.12, x86-64; these are the versions pyproject.toml pins and the venv resolves; ~25 MB):
#
#      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#        flash-linear-attention==0.6.0 fla-core==0.6.0 transformers==5.23.0 tokenizers==0.23.3 \
#        huggingface-hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 hf-xet==1.8.0 \
#        safetensors==0.8.0 regex==2026.11.19 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
#        referencing==0.37.0 rpds-py==2026.9.1
#
#    torch and triton stay the image's (no-deps install; the project pins torch 2.13 / triton 3.9 for the
#    CPU backend, the image's versions are logged in env.txt). If `.whl` exists, they are installed with
#    `pip install --no-index --no-deps --target /tmp/site .whl/*.whl` and PYTHONPATH=/tmp/site:<repo>.
# 2. GPU tests: `pytest -m gpu tests/gpu` (fla's Triton kernels == the torch backend on logits, states
#    and gradients; REFINE one-pass == re-encode on CUDA; bf16 autocast with fp32 masters), <= 180 s.
# 3. Paper-size measurement: tools/gpu_paper_measure.py (DeltaNet 1.3B, 16K tokens, the paper config's
#    per-GPU rows; one REFINE and one NTP update; peak memory, time, memory.py's estimate), <= 250 s.
#
# Output under $OUT (the device tool brings back at most 8 files): env.txt, pip.log, gpu_tests.log,
# gpu_tests.xml, paper_measure.log, paper_measure.csv, paper_measure.json.
# Exit status: 0 if the tests passed and the measurement ran (an out-of-memory case is a result, not a
# failure); 1 otherwise. Expected device time: ~6-7 minutes plus the machine's start.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
out="${OUT:-results/gpu_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py="${PYTHON:-python3}"
started=$SECONDS

if [ -d .whl ]; then
    if ! timeout 120 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >"$out/pip.log" 2>&1; then
        echo "gpu_check: installing the carried wheels failed:" >&2
        tail -20 "$out/pip.log" >&2
        exit 1
    fi
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no .whl folder: using the installed packages" >"$out/pip.log"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

{
    date -u
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L 2>&1; else echo "no nvidia-smi"; fi
    "$py" - <<'EOF' 2>&1
import importlib
for name in ("torch", "triton", "transformers", "tokenizers", "huggingface_hub", "fla", "pytest"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), getattr(module, "__file__", ""))
    except Exception as error:  # noqa: BLE001 - a report, not a check
        print(name, "NOT IMPORTABLE:", type(error).__name__, error)
import torch
print("cuda available:", torch.cuda.is_available(), torch.version.cuda)
import refine.models.backend  # noqa: F401  (fla, transformers and the project import together)
print("refine imports: ok")
EOF
} >"$out/env.txt"
cat "$out/env.txt"

parts="${GPU_CHECK_PARTS:-tests measure}"
tests_rc=0
measure_rc=0
if [[ " $parts " == *" tests "* ]]; then
    echo "== GPU tests ($((SECONDS - started)) s)"
    timeout -k 10 180 "$py" -m pytest -q -m gpu tests/gpu -o addopts="" -p no:cacheprovider -rs \
        --junitxml="$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log"
    tests_rc=${PIPESTATUS[0]}
fi
if [[ " $parts " == *" measure "* ]]; then
    echo "== paper-size measurement ($((SECONDS - started)) s)"
    timeout -k 10 250 "$py" tools/gpu_paper_measure.py --out "$out" --updates 2 --time-budget 210 --case-budget 120 2>&1 \
        | tee "$out/paper_measure.log"
    measure_rc=${PIPESTATUS[0]}
fi

echo "== done in $((SECONDS - started)) s: tests exit $tests_rc, measurement exit $measure_rc"
[ -f "$out/paper_measure.csv" ] && cat "$out/paper_measure.csv"
[ "$tests_rc" -eq 0 ] && [ "$measure_rc" -eq 0 ]
