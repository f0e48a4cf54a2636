"""refine: REFINE (reinforced fast weights with next-sequence prediction) as an experiment pipeline."""

__version__ = "0.1.0"

import warnings as _warnings  # noqa: E402

# fla warns "Triton is not supported on current platform, roll back to CPU" at import on a machine
# without a GPU. The project picks fla's CPU backend on purpose and says so once, at INFO
# (`refine.models.backend.activate`), so that warning -- and only it -- is silenced, before any
# module of the package can import fla.
_warnings.filterwarnings("ignore", message="Triton is not supported on current platform", module="fla")

from refine import hub as _hub  # noqa: E402

_hub.install()  # the Auto classes learn LaCT / DeltaNet at their first from_pretrained (cheap here)
