"""Typed, range-checked options, declared once.

A quantizer (or regulariser, backbone or training objective) declares each of its options as an
`Option`; the same declaration checks the keyword argument when the module is built on its own and
the config field when a tokenizer config is built, and documents the option (`doc`), so a type, a
range and a meaning are written in one place.

Errors name the option and say what was expected and what was received: a wrong type raises
`TypeError`, a value out of range (NaN and infinities included) raises `ValueError`.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

# An option declared `float` accepts ints too (`0` for `0.0`), never bools.
NUMBER = float
# The largest finite float32: a float option beyond it would become an infinity where it is used.
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Option:
    """What one option accepts.

    Args:
        kind: `int`, `float` (any real number), `bool`, `str`, `dict` or `list`.
        low / high: bounds of a number (None: unbounded on that side).
        low_open / high_open: exclude the bound itself.
        choices: the only values allowed.
        optional: None is allowed too.
        doc: what the option does, written once here; config and module docstrings list it from
            here (`document_options`).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    optional: bool = False
    doc: str = ""

    def documented(self, doc: str) -> Option:
        """The same option with its meaning `doc`."""
        return replace(self, doc=doc)

    def accepts(self, value: Any) -> bool:
        """Whether `check` would let `value` through."""
        try:
            self.check("value", value)
        except (TypeError, ValueError):
            return False
        return True

    def check(self, name: str, value: Any, where: str = "option") -> None:
        """Raise `TypeError`/`ValueError` naming `where` `name` unless `value` is acceptable."""
        if value is None and self.optional:
            return
        if not self._has_kind(value):
            expected = "a number" if self.kind is float else self.kind.__name__
            expected += " or None" if self.optional else ""
            raise TypeError(f"{where} `{name}` must be {expected}, got {type(value).__name__} ({value!r})")
        if self.kind in (int, float) and not math.isfinite(value):
            raise ValueError(f"{where} `{name}` must be a finite number, got {value!r}")
        if self.kind is float and abs(value) > FLOAT32_MAX:
            raise ValueError(f"{where} `{name}` must be representable in float32 (|value| <= {FLOAT32_MAX:.4g}), the "
                             f"precision it is computed in, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where} `{name}` must be one of {list(self.choices)}, got {value!r}")
        if self._out_of_range(value):
            raise ValueError(f"{where} `{name}` must lie in {self.bounds}, got {value!r}")

    @property
    def bounds(self) -> str:
        """The allowed interval in mathematical notation, e.g. `[0, 1)`."""
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"

    def _has_kind(self, value: Any) -> bool:
        # bool is an int subclass; a flag passed where a number is expected is almost always a mistake.
        if isinstance(value, bool):
            return self.kind is bool
        if self.kind is float:
            return isinstance(value, (int, float))
        return isinstance(value, self.kind)

    def _out_of_range(self, value: Any) -> bool:
        if self.kind not in (int, float):
            return False
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return too_low or too_high


def check_options(specs: Mapping[str, Option], values: Mapping[str, Any], where: str = "option") -> None:
    """Check every value in `values` against its spec in `specs` (a name without a spec is an error)."""
    for name, value in values.items():
        if name not in specs:
            raise ValueError(f"unknown {where} `{name}`; known: {sorted(specs)}")
        specs[name].check(name, value, where)


def document_options(
    specs: Mapping[str, Option], defaults: Mapping[str, Any] | None = None, notes: Mapping[str, str] | None = None
) -> str:
    """An `Args:` section in the Hugging Face docstring format, one entry per option of `specs`:
    its kind, its default (from `defaults`, where there is one), its `doc` and the `notes` a class
    adds about it."""
    defaults, notes = defaults or {}, notes or {}
    lines = ["Args:"]
    for name, option in specs.items():
        kind = "float" if option.kind is float else option.kind.__name__
        default = defaults.get(name, _NO_DEFAULT)
        shown = "*optional*" if default is None else (f"defaults to {default!r}" if default is not _NO_DEFAULT else "")
        lines.append(f"    {name} (`{kind}`{', ' + shown if shown else ''}):")
        text = " ".join(part for part in (option.doc, notes.get(name, "")) if part) or "(undocumented)"
        lines += textwrap.wrap(text, width=100, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return "\n".join(lines)


_NO_DEFAULT = object()


def append_options_doc(cls: type, specs: Mapping[str, Option], notes: Mapping[str, str] | None = None) -> None:
    """Append to `cls`'s docstring the `Args` section of `specs`, with the defaults of `cls.__init__`
    or, for a dataclass about to be made, of its class attributes (for the classes that take their
    options as keyword arguments: quantizers, regularisers, backbone configs, training objectives)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    defaults = {name: cls.__dict__[name] for name in specs if name in cls.__dict__}
    defaults.update({p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty})
    section = textwrap.indent(document_options(specs, defaults, notes), "    ")
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n" + section


class Pluggable:
    """A class that a config switches on by its `name`, with its options declared in `options`
    (checked when a config names it and when it is built, and listed in its docstring)."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        append_options_doc(cls, cls.options)

    @classmethod
    def check_options(cls, values: Mapping[str, Any], where: str | None = None) -> None:
        """Raise `TypeError`/`ValueError` naming the first option in `values` that `options` rejects."""
        check_options(cls.options, values, where or f"{cls.__name__} option")


class Registry:
    """The `Pluggable` classes that a config can switch on by name: the regularisers of a tokenizer
    config, the training objectives of a run config.

    Args:
        kind: what is registered, for messages ("regulariser").
        where: what holds the settings, for messages ("config field").
        key: the settings' key there ("regularizers").
    """

    def __init__(self, kind: str, where: str, key: str):
        self.kind, self.where, self.key = kind, where, key
        self.classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Make `cls` available under its `name`."""
        if not getattr(cls, "name", ""):
            raise ValueError(f"{cls.__name__} must set a `name`")
        self.classes[cls.name] = cls
        return cls

    def check_settings(self, settings: Mapping | None) -> None:
        """Raise `ValueError`/`TypeError` unless `settings` maps registered names to valid option dicts."""
        for name, options in (settings or {}).items():
            if name not in self.classes:
                raise ValueError(
                    f"{self.where} `{self.key}` names an unknown {self.kind} {name!r}; registered: {sorted(self.classes)}"
                )
            if not isinstance(options, Mapping):
                raise TypeError(
                    f"{self.where} `{self.key}.{name}` must map option names to values, got {type(options).__name__}"
                )
            check_options(self.classes[name].options, options, f"{self.where} `{self.key}.{name}` option")

    def build(self, settings: Mapping | None) -> dict[str, Any]:
        """One instance per name switched on in `settings` (name -> options), in their order."""
        self.check_settings(settings)
        return {name: self.classes[name](**options) for name, options in (settings or {}).items()}

# Options shared by several modules.
CODEBOOK_SIZE = Option(int, low=2)
POSITIVE_INT = Option(int, low=1)
NON_NEGATIVE_INT = Option(int, low=0)
NON_NEGATIVE = Option(NUMBER, low=0)
POSITIVE = Option(NUMBER, low=0, low_open=True)
UNIT_INTERVAL = Option(NUMBER, low=0, high=1)
FLAG = Option(bool)
# The `transformers.get_scheduler` names that run from a warm-up and a step count alone (the others
# need a metric or extra arguments the loop does not pass).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")
LR_SCHEDULER = Option(str, choices=LR_SCHEDULERS)
