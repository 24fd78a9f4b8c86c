"""The registry of fault kinds: all that squall knows of a kind besides its struct.

A fault kind is a tagged msgspec Struct (a ``Fault``, see ``squall.chaos.injectors``) with
the time ``at`` it strikes, its fields, and ``apply(surface)``: how it acts through the
fault surface. It registers itself with ``@fault_kind(...)``, giving

- ``label`` and ``colour``: how the report names and draws what it did;
- ``draw``: how Hypothesis draws one, a menu per field (a tuple of values, the first the
  simplest, or ``WORKER``, ``PREFIX``, ``Maybe(menu)``), and ``rank``: where among the
  kinds it draws (Hypothesis shrinks toward rank 0);

and, on the struct itself (each optional): ``at_rate(draw, t)``, a class method: the
faults a rate schedule draws when the kind strikes at ``t``; ``check()``; ``ending()``:
the fault that ends it (a timed partition's heal); ``timeout_verdict()``: what the
failure detector's verdict on it amounts to (the minimizer tries it in place of the
wait); ``drive(driver)``: for a kind that needs what ``ChaosDriver`` remembers (a heal).

Everything else asks the registry or the surface: the Hypothesis strategies (``faults``)
and ``ChaosSchedule.from_rates``/``swarm`` draw every kind that says how; a scenario or
trace file decodes every kind registered when it is read (the union of the kinds is built
then: ``as_faults``); what a fault does -- whether it takes a worker out of action, cuts
links, needs the network proxy in real mode -- is read off the surface calls it makes
(``injectors.effects``); the report labels and colours what each kind did.
``registered(cls, ...)`` registers a kind for the length of a ``with`` block (a kind
defined in a test).
"""

from __future__ import annotations

import enum
import functools
import operator
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

import msgspec

if TYPE_CHECKING:
    from squall.chaos.injectors import Fault

    # A scenario's or a schedule's faults. msgspec decodes the field as plain data; the
    # struct's __post_init__ makes faults of it (``as_faults``) with the kinds registered
    # at that moment, so a kind registered after the first decode is decoded too.
    Faults: TypeAlias = tuple[Fault, ...]
else:
    Faults = tuple[Any, ...]

F = TypeVar("F", bound="type[Fault]")


# ------------------------------------------------------------------ how Hypothesis draws


class Pick(enum.Enum):
    """Menus whose values the drawing side knows."""

    WORKER = "one of the cluster's workers, w0 first"
    PREFIX = "None (every task) or one of the workload's task prefixes"


WORKER = Pick.WORKER
PREFIX = Pick.PREFIX


@dataclass(frozen=True)
class Maybe:
    """None (the simpler) or a value from ``menu``."""

    menu: Menu


# A field's menu: a tuple of values (the first is the simplest: Hypothesis shrinks toward
# it), a Pick, or Maybe(menu).
Menu: TypeAlias = "tuple[Any, ...] | Pick | Maybe"


# ------------------------------------------------------------------ how a rate schedule draws


class RateDraw(Protocol):
    """What a kind's ``at_rate(draw, t)`` draws with (``ChaosSchedule.from_rates``): every
    choice from ``rng``, and at most one named worker out of action at a time."""

    rng: random.Random
    names: list[str]  # the workers the schedule acts on
    prefixes: list[str]  # the task prefixes a fault may single out
    outage: float  # the longest a worker may be cut off

    def victim(self, t: float) -> str | None:
        """A worker to put out of action at ``t``; None if one is out already."""
        ...

    def out_until(self, name: str, until: float) -> None:
        """``name`` is out of action (dead, paused, cut off) until ``until``."""
        ...


RateHook = Callable[[RateDraw, float], "list[Fault]"]


# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class FaultKind:
    """A registered kind: its struct and what the rest of squall needs to know of it."""

    cls: type[Fault]
    label: str  # what the report's legend calls it
    colour: str  # a matplotlib colour: the report's marks for it
    draw: Mapping[str, Menu] | None = None  # field -> menu; None: Hypothesis never draws it
    rank: int = 100  # its place among the kinds Hypothesis draws: it shrinks toward 0

    @property
    def name(self) -> str:
        """The kind's tag (``kind`` in JSON)."""
        return str(self.cls.__struct_config__.tag)

    @property
    def at_rate(self) -> RateHook | None:
        """How a rate schedule draws it (the struct's ``at_rate``); None: it does not."""
        hook: RateHook | None = getattr(self.cls, "at_rate", None)
        return hook


_KINDS: dict[str, FaultKind] = {}


def register(cls: type[Fault], *, label: str, colour: str,
             draw: Mapping[str, Menu] | None = None, rank: int = 100) -> FaultKind:
    """Register the fault kind ``cls`` (again: its entry is replaced). ValueError if another
    class is registered under its tag; TypeError if it does not define ``apply``."""
    kind = FaultKind(cls, label, colour, None if draw is None else dict(draw), rank)
    old = _KINDS.get(kind.name)
    if old is not None and old.cls is not cls:
        raise ValueError(f"fault kind {kind.name!r} is registered already, by "
                         f"{old.cls.__module__}.{old.cls.__qualname__}")
    for field in kind.draw or ():
        if field not in cls.__struct_fields__:
            raise ValueError(f"fault kind {kind.name!r}: draw names {field!r}, not a field")
    from squall.chaos.injectors import Fault as Base  # (injectors imports this module)

    if cls.apply is Base.apply:  # refused here, not when the fault strikes mid-run
        raise TypeError(f"fault kind {kind.name!r} defines no apply(surface)")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget the kind tagged ``name`` (its faults no longer decode nor are drawn)."""
    _KINDS.pop(name, None)


def fault_kind(*, label: str, colour: str, draw: Mapping[str, Menu] | None = None,
               rank: int = 100) -> Callable[[F], F]:
    """Class decorator: register the fault kind (see ``register``)."""

    def decorate(cls: F) -> F:
        register(cls, label=label, colour=colour, draw=draw, rank=rank)
        return cls

    return decorate


@contextmanager
def registered(cls: type[Fault], *, label: str, colour: str,
               draw: Mapping[str, Menu] | None = None, rank: int = 100) -> Iterator[FaultKind]:
    """The kind ``cls`` registered for the length of the ``with`` block (as it was before,
    after it)."""
    before = _KINDS.get(str(cls.__struct_config__.tag))
    kind = register(cls, label=label, colour=colour, draw=draw, rank=rank)
    try:
        yield kind
    finally:
        if before is None:
            unregister(kind.name)
        else:
            _KINDS[kind.name] = before


def fault_kinds() -> tuple[FaultKind, ...]:
    """Every registered kind, in the order they registered."""
    return tuple(_KINDS.values())


def kind(name: str) -> FaultKind | None:
    """The kind tagged ``name``, if one is registered."""
    return _KINDS.get(name)


def drawn_kinds() -> tuple[FaultKind, ...]:
    """The kinds Hypothesis draws, by rank (then in the order they registered)."""
    return tuple(sorted((k for k in _KINDS.values() if k.draw is not None),
                        key=lambda k: k.rank))


def rate_kinds() -> dict[str, RateHook]:
    """The kinds a rate schedule draws, by name: their ``at_rate``, in the order they
    registered (the order in which ``from_rates`` draws them from its seed)."""
    return {k.name: k.at_rate for k in _KINDS.values() if k.at_rate is not None}


# ------------------------------------------------------------------ decoding


@functools.lru_cache(maxsize=16)
def _decoding_type(classes: tuple[type[Fault], ...]) -> Any:
    """``tuple[K1 | K2 | ..., ...]``: what msgspec decodes a fault field's data into."""
    union: Any = functools.reduce(operator.or_, classes)
    return tuple[union, ...]


def as_faults(items: Iterable[Any], field: str) -> Faults:
    """``items`` as faults: a fault stays as it is, JSON data (an object tagged ``kind``) is
    decoded with the union of the kinds registered now. ValueError names the bad item as
    msgspec would, under ``field`` (``$.chaos[0].kind``)."""
    from squall.chaos.injectors import Fault

    items = tuple(items)
    if all(isinstance(x, Fault) for x in items):
        return items
    try:
        faults: Faults = msgspec.convert(
            items, _decoding_type(tuple(k.cls for k in _KINDS.values())))
    except msgspec.ValidationError as e:
        raise ValueError(str(e).replace("`$[", f"`$.{field}[", 1)) from None
    return faults
