"""Shared setup of the GPU-marked tests (tests/gpu, `pytest -m gpu`; run by tools/gpu_check.sh).

Every module here marks its tests `gpu` and skips them without CUDA, so they stay in the default
run and cost nothing on a CPU. fla's backend is a process-wide choice (`refine.models.backend`):
the fixture below puts back whatever backend was active before each test, so switching to fla's
Triton kernels here never leaks into another test.
"""

import pytest

from refine.models import backend


@pytest.fixture(autouse=True)
def _restore_backend():
    before = backend.active_backend()
    yield
    if before is not None:
        backend.activate("cpu" if before == "torch" else "cuda")
