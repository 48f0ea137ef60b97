"""One registry mechanism for everything created by name: models, flow estimators, evaluation datasets.

timm style: each kind of thing has one :class:`Registry`; ``register`` adds an entry (also as a decorator),
``get`` returns it or raises one :class:`~bufferanytime.errors.InputError` listing the choices, ``list`` gives
the names in registration order. The public listings are ``bufferanytime.models.list_models``,
``bufferanytime.flow.list_flows`` and ``bufferanytime.evaluation.list_datasets``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bufferanytime.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind; ``what`` names the kind in messages (e.g. "flow method")."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """Add ``entry`` under ``name``; without ``entry``, a decorator that registers what it decorates."""
        if entry is None:
            return lambda decorated: self.register(name, decorated)
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry named ``name``; InputError naming the choices if there is none."""
        if name not in self._entries:
            raise InputError(f"unknown {self.what} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def list(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
