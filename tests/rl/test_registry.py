"""`refine.registry.Registry`, the one helper behind rewards, advantage estimators and selection
modes: unknown names name the key and the choices, duplicates raise, attributes are kept."""

import pytest

from refine.registry import Registry, UnknownNameError
from refine.rl.advantages import ADVANTAGE_ESTIMATORS
from refine.rl.positions import RAW_ENTROPY_MODES, SELECTION_MODES
from refine.rl.rewards import REWARDS


def test_unknown_name_names_the_key_and_the_choices():
    registry = Registry("colour", key="paint.colour")
    registry.add("red", 1)
    registry.add("blue", 2)
    with pytest.raises(UnknownNameError, match=r"^paint\.colour: unknown colour 'green'; known: \['blue', 'red'\]$"):
        registry["green"]
    with pytest.raises(ValueError, match=r"^eval\.ttt\.colour: unknown colour"):
        registry.lookup("green", key="eval.ttt.colour")
    with pytest.raises(KeyError):
        registry["green"]
    assert "red" in registry and "green" not in registry and sorted(registry) == ["blue", "red"]
    assert registry.get("green") is None and dict(registry) == {"red": 1, "blue": 2}


def test_duplicates_raise_and_attributes_are_kept():
    registry = Registry("mode")

    @registry.register("fast", raw=True)
    def fast():
        return 1

    assert registry["fast"] is fast and registry.attribute("fast", "raw") is True
    assert registry.attribute("fast", "other", "default") == "default"
    with pytest.raises(ValueError, match="mode 'fast' is already registered"):
        registry.add("fast", fast)
    del registry["fast"]
    assert len(registry) == 0


def test_the_rl_registries_are_registries_with_their_config_keys():
    for registry, key, names in (
        (REWARDS, "reward", {"cosine", "exact", "hybrid"}),
        (ADVANTAGE_ESTIMATORS, "advantage", {"grpo", "rloo"}),
        (SELECTION_MODES, "selection", {"entropy", "uniform", "argmax", "argmin"}),
    ):
        assert isinstance(registry, Registry) and names <= set(registry)
        with pytest.raises(ValueError, match=rf"^{key}: unknown .* 'nope'; known: \[.*\]$"):
            registry["nope"]
    assert {m for m in SELECTION_MODES if SELECTION_MODES.attribute(m, "raw")} == RAW_ENTROPY_MODES
