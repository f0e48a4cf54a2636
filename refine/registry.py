"""Named variants picked from the config: one `Registry` per kind (rewards, advantage estimators,
rollout-position selection modes), as verl's `core_algos` registers its estimators.

A registry is a read-only mapping name -> object with a decorator that adds an entry:

    REWARDS = Registry("reward", key="reward")

    @REWARDS.register("cosine")
    def cosine_reward(...): ...

    REWARDS["cosine"]        # the function
    REWARDS["bleu"]          # UnknownNameError: reward: unknown reward 'bleu'; known: ['cosine', ...]

Registering a name twice raises (a typo'd copy must not silently replace the original). Entries
can carry attributes (`register("argmax", raw=True)`, read with `attribute(name, "raw")`). The
error for an unknown name names the config key (the registry's `key`, or the dotted path a caller
passes to `lookup`) and the known names; it is both a `ValueError` (what config checks raise) and
a `KeyError` (what a mapping raises).

This module is the bottom floor: it imports nothing from `refine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError, KeyError):
    """A name that no entry of a `Registry` has; the message names the key and the known names."""

    __str__ = Exception.__str__  # not KeyError's repr-quoted message


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one kind by name. kind: what an entry is, in messages ("reward"); key: the config
    key that selects one (default: `kind`)."""

    def __init__(self, kind: str, key: str | None = None):
        self.kind = kind
        self.key = key if key is not None else kind
        self._entries: dict[str, T] = {}
        self._attributes: dict[str, dict[str, Any]] = {}

    def add(self, name: str, entry: T, **attributes: Any) -> T:
        """Register `entry` under `name` (ValueError if the name is taken); returns `entry`."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        self._attributes[name] = attributes
        return entry

    def register(self, name: str, **attributes: Any) -> Callable[[T], T]:
        """Decorator form of `add`: returns the decorated object unchanged."""

        def decorate(entry: T) -> T:
            return self.add(name, entry, **attributes)

        return decorate

    def lookup(self, name: str, key: str | None = None) -> T:
        """The entry called `name`; `UnknownNameError` naming `key` (default: the registry's) and
        the known names otherwise."""
        if name not in self._entries:
            raise UnknownNameError(
                f"{key or self.key}: unknown {self.kind} {name!r}; known: {sorted(self._entries)}"
            )
        return self._entries[name]

    def attribute(self, name: str, attribute: str, default: Any = None) -> Any:
        """An attribute given to `name` at registration (`default` when it was not given)."""
        self.lookup(name)
        return self._attributes[name].get(attribute, default)

    def __getitem__(self, name: str) -> T:
        return self.lookup(name)

    def __delitem__(self, name: str) -> None:
        """Unregister `name` (tests that register a temporary entry)."""
        self.lookup(name)
        del self._entries[name]
        del self._attributes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"
