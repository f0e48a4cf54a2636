"""The CPU stand-ins for fla's kernels take fla's arguments and hand each one on by name.

1. Every stand-in that `refine.models.backend` installs has fla 0.6.0's parameters, in fla's order,
   as a prefix of its own (extras go where fla takes **kwargs), so a positional call from fla's
   layers binds every argument to the parameter of the same name.
2. Every shim that forwards to an inner driver passes each argument to the inner parameter of
   the same name. Checked with a distinct sentinel per argument and a recorder in place of the
   inner function; `test_the_check_catches_a_swapped_positional_forward` shows the check fails
   on a forward that passes two arguments in swapped positions.
"""

import inspect
import types

import pytest
import torch

from refine.models import backend
from refine.models.ops import conv, delta_rule, gated_delta_rule


def _named(params) -> list[str]:
    return [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _original_and_stand_in():
    import fla.models  # noqa: F401  (imports the layers the backend patches)

    backend.activate("cpu")
    for (module_name, path), original in backend._originals.items():
        stand_in = getattr(*backend._owner_and_name(module_name, path))
        yield path, original, stand_in


def test_stand_ins_take_fla_parameters_in_fla_order():
    checked = 0
    for path, original, stand_in in _original_and_stand_in():
        pairs = [(original.forward, stand_in.forward)] if inspect.isclass(original) else [(original, stand_in)]
        for fla_fn, ours in pairs:
            fla_params = list(inspect.signature(fla_fn).parameters.values())
            if any(p.kind == p.VAR_POSITIONAL for p in fla_params):
                continue  # fla's swiglu takes *args: any order binds the same
            fla_names, our_names = _named(fla_params)[1:], _named(inspect.signature(ours).parameters.values())[1:]
            # [1:]: the first is the tensor (or `self`, which our ShortConvolution.forward calls `module`)
            assert our_names[: len(fla_names)] == fla_names, path
            checked += 1
    assert checked >= 10


def test_stand_in_losses_take_their_options_by_keyword_only():
    from refine.models.ops import loss

    for cls in (loss.CrossEntropyLoss, loss.LinearCrossEntropyLoss):
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        assert params and all(p.kind == p.KEYWORD_ONLY for p in params), cls
        with pytest.raises(TypeError):
            cls(-100, "mean")


class _Arg:
    """A distinct object per argument; shims pass it on untouched."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


def _misrouted(outer, module, inner_name, given: dict) -> list[str]:
    """Call `outer(**given)` with `module.<inner_name>` replaced by a recorder; the names of the
    inner parameters that did not receive the argument of the same name (a binding error counts)."""
    real = getattr(module, inner_name)
    seen = {}

    def recorder(*args, **kwargs):
        seen.update(inspect.signature(real).bind(*args, **kwargs).arguments)
        return "done"

    setattr(module, inner_name, recorder)
    try:
        assert outer(**given) == "done"
    except TypeError as error:
        return [f"binding: {error}"]
    finally:
        setattr(module, inner_name, real)
    return [name for name, value in given.items() if name in seen and seen[name] is not value]


def _sentinels(fn, **fixed) -> dict:
    names = _named(inspect.signature(fn).parameters.values())
    return {name: fixed[name] if name in fixed else _Arg(name) for name in names}


FORWARDS = [
    # (outer, module of the inner, inner name, arguments the shim inspects)
    (delta_rule.chunk_delta_rule, delta_rule, "delta_rule_forward", {}),
    (delta_rule.recurrent_delta_rule, delta_rule, "delta_rule_forward", {}),
    (delta_rule.short_input_delta_rule, delta_rule, "recurrent_delta_rule", {"q": torch.zeros(1, 2, 1, 1)}),
    (delta_rule.short_input_delta_rule, delta_rule, "chunk_delta_rule", {"q": torch.zeros(1, 20, 1, 1)}),
    (gated_delta_rule.chunk_gated_delta_rule, gated_delta_rule, "_gated_forward", {"cp_context": None}),
    (gated_delta_rule.recurrent_gated_delta_rule, gated_delta_rule, "_gated_forward",
     {"gk": None, "gv": None, "use_gate_in_kernel": False}),
    (conv.short_convolution_forward, conv, "causal_conv1d", {"mask": None}),
]  # fmt: skip


@pytest.mark.parametrize("outer, module, inner, fixed", FORWARDS, ids=lambda x: getattr(x, "__name__", None))
def test_every_argument_reaches_the_inner_parameter_of_its_name(outer, module, inner, fixed):
    given = _sentinels(outer, **fixed)
    if outer is conv.short_convolution_forward:
        given["module"] = types.SimpleNamespace(weight=torch.zeros(3, 1, 4), bias=_Arg("bias"), activation=_Arg("a"))
    assert _misrouted(outer, module, inner, given) == []


def test_the_check_catches_a_swapped_positional_forward():
    """A shim that forwards `scale` and `initial_state` in swapped positions fails the check."""
    space = types.SimpleNamespace()

    def inner(q, scale, initial_state, output_final_state):
        raise AssertionError("replaced by the recorder")

    def swapped(q, scale=None, initial_state=None, output_final_state=False):
        return space.inner(q, initial_state, scale, output_final_state)

    def by_keyword(q, scale=None, initial_state=None, output_final_state=False):
        return space.inner(q=q, scale=scale, initial_state=initial_state, output_final_state=output_final_state)

    space.inner = inner
    assert sorted(_misrouted(swapped, space, "inner", _sentinels(swapped))) == ["initial_state", "scale"]
    assert _misrouted(by_keyword, space, "inner", _sentinels(by_keyword)) == []
