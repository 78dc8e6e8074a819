"""Typed, range-checked options, each declared once: name, type, default, range and doc.

A class with options declares them in `options` (name -> `Option`). Quantizers, regularisers and
training objectives are `Configurable`: they take their options as keyword arguments and keep them
as attributes (`set_options`). Settings such as a backbone's or a run config section's are
`Settings`, dataclasses whose fields `options_dataclass` writes from the declarations. A tokenizer
type's config takes its quantizer's declarations as its own fields (`vqtok.configuration`). So the
same declaration checks a keyword argument, a config field and a run-config value, gives their
default, and documents them: the `Args` section of a class's docstring is written from it by the
`document_options` decorator.

Errors name the option and say what was expected and what was received: a wrong type raises
`TypeError`, a value out of range (NaN and infinities included) raises `ValueError`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

# An option declared `float` accepts ints too (`0` for `0.0`), never bools.
NUMBER = float
# The largest finite float32: a float option beyond it would become an infinity where it is used.
FLOAT32_MAX = 3.4028234663852886e38


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
"""The default of an `Option` that has none: a kind of value, not yet a declaration."""


@dataclasses.dataclass(frozen=True)
class Option:
    """What one option accepts, and, once declared, its default and meaning.

    A kind of value (`POSITIVE`, `FLAG`, ...) becomes an option's declaration when called with a
    default and a doc: `NON_NEGATIVE(0.25, "beta, the weight of the commitment loss.")`.

    Args:
        kind: `int`, `float` (any real number), `bool`, `str`, `dict` or `list`.
        low / high: bounds of a number (None: unbounded on that side).
        low_open / high_open: exclude the bound itself.
        choices: the only values allowed.
        optional: None is allowed too.
        items: what each element of a `list` option accepts (the list must then not be empty).
        default: the value when none is given (`REQUIRED`: none).
        doc: what the option does.
        note: what one class says about the option beyond `doc` (why its default differs from the
            paper's, ...); shown after `doc` in that class's documentation.
        training_only: the option shapes training only (a loss weight, a schedule, restarts, how a
            fresh codebook starts), not the trained model (its weights' shapes and what `encode`
            computes): a fine-tuning run (`model.init_from`) may change it. An option is taken to
            define the model unless declared so.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    optional: bool = False
    items: Option | None = None
    default: Any = REQUIRED
    doc: str = ""
    note: str = ""
    training_only: bool = False

    def __call__(self, default: Any, doc: str = "", note: str = "", training_only: bool = False) -> Option:
        """This kind of value declared as an option with `default`, `doc`, `note` and `training_only`."""
        self.check("default", default, "declared")
        return dataclasses.replace(self, default=default, doc=doc, note=note, training_only=training_only)

    def changed(self, default: Any, note: str = "") -> Option:
        """The same option with another default, and `note` saying why."""
        return self(default, self.doc, note, self.training_only)

    def documented(self, doc: str) -> Option:
        """The same option with its meaning `doc` (for a kind of value that has no default)."""
        return dataclasses.replace(self, doc=doc)

    def default_value(self) -> Any:
        """A fresh copy of the default (a list default is never shared between instances)."""
        if self.default is REQUIRED:
            raise TypeError("this option has no default")
        return copy.deepcopy(self.default)

    @property
    def annotation(self) -> str:
        """The option's type as an annotation, e.g. `float | int | None`."""
        kind = "float | int" if self.kind is float else self.kind.__name__
        return f"{kind} | None" if self.optional else kind

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
        if self.items is not None:
            if not value:
                raise ValueError(f"{where} `{name}` must not be empty")
            for item in value:
                self.items.check(f"{name}[i]", item, where)

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


def option_defaults(specs: Mapping[str, Option]) -> dict[str, Any]:
    """Each declared option's default (fresh copies)."""
    return {name: option.default_value() for name, option in specs.items()}


class Configurable:
    """A class whose options are declared once, in `options`.

    `options_with_defaults` checks given values (unknown names rejected) and fills in the defaults;
    `set_options` also keeps every option as an attribute (a number as a float), so a subclass's
    `__init__(self, **options)` reads `self.<option>`. Rules that tie several options together are
    `option_rules`.
    """

    options: ClassVar[dict[str, Option]] = {}
    option_rules: ClassVar[tuple[Callable[[Mapping[str, Any], str], None], ...]] = ()
    """Rules that tie several options together: each is called with the complete options and the
    name errors give them, and raises `ValueError` when they break it."""
    option_owner: ClassVar[str] = ""
    """How errors name what the options belong to ("training option", ...); the class's arguments by default."""

    @classmethod
    def check_options(cls, values: Mapping[str, Any], where: str | None = None) -> None:
        """Raise `TypeError`/`ValueError` naming the first option in `values` that `options` rejects,
        then, when `values` hold every option, the first of `option_rules` they break."""
        where = cls._where(where)
        check_options(cls.options, values, where)
        if set(values) >= set(cls.options):
            for rule in cls.option_rules:
                rule(values, where)

    @classmethod
    def options_with_defaults(cls, values: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """`values` with the default of every option they leave out, checked (see `check_options`;
        an unknown name is an error)."""
        unknown = sorted(set(values) - set(cls.options))
        if unknown:
            raise ValueError(f"unknown {cls._where(where)} `{unknown[0]}`; known: {sorted(cls.options)}")
        complete = {**option_defaults(cls.options), **values}
        cls.check_options(complete, where)
        return complete

    @classmethod
    def _where(cls, where: str | None) -> str:
        return where or cls.option_owner or f"{cls.__name__} argument"

    def set_options(self, values: Mapping[str, Any], where: str | None = None) -> None:
        """Check `values`, fill in the defaults and keep each option as an attribute (numbers as floats)."""
        for name, value in self.options_with_defaults(values, where).items():
            is_number = self.options[name].kind is float and value is not None
            setattr(self, name, float(value) if is_number else value)

    def option_values(self) -> dict[str, Any]:
        """The options by name, as kept."""
        return {name: getattr(self, name) for name in self.options}


class Settings(Configurable):
    """A dataclass of options (`options_dataclass` writes its fields), checked when made."""

    def __post_init__(self):
        self.check_options(self.option_values())


def add_option_fields(cls: type, specs: Mapping[str, Option]) -> None:
    """Give the class `cls`, before it is made a dataclass, one field per option of `specs`, with its
    annotation and its default (a factory for a list or dict default)."""
    annotations = dict(cls.__dict__.get("__annotations__", {}))
    for name, option in specs.items():
        annotations[name] = option.annotation
        if isinstance(option.default, (list, dict)):
            setattr(cls, name, dataclasses.field(default_factory=option.default_value))
        else:
            setattr(cls, name, option.default)
    cls.__annotations__ = annotations


def options_dataclass(cls: type[Settings]) -> type[Settings]:
    """Class decorator: make the `Settings` class `cls` a dataclass with one field per option it
    declares (its options are those of `cls.options` that no base dataclass holds as a field yet),
    and document them (`document_options`)."""
    inherited = {field.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base)
                 for field in dataclasses.fields(base)}
    add_option_fields(cls, {name: option for name, option in cls.options.items() if name not in inherited})
    return document_options(dataclasses.dataclass(cls))


# --- documentation ------------------------------------------------------------------------------
def args_section(specs: Mapping[str, Option]) -> str:
    """An `Args:` section in the Hugging Face docstring format, one entry per option of `specs`:
    its kind, its default, its `doc` and its `note`."""
    lines = ["Args:"]
    for name, option in specs.items():
        kind = "float" if option.kind is float else option.kind.__name__
        if option.default is REQUIRED:
            shown = ""
        elif option.default is None:
            shown = ", *optional*"
        else:
            shown = f", defaults to {option.default!r}"
        lines.append(f"    {name} (`{kind}`{shown}):")
        text = " ".join(part for part in (option.doc, option.note) if part) or "(undocumented)"
        if option.training_only:
            text += " (Training only: a fine-tuning run may change it.)"
        lines += textwrap.wrap(text, width=100, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return "\n".join(lines)


def document_options(cls: type) -> type:
    """Class decorator: append to `cls`'s docstring the `Args` section of its options: those of
    `cls.documented_options()` where the class defines it, else `cls.options`."""
    specs = cls.documented_options() if hasattr(cls, "documented_options") else cls.options
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n" + textwrap.indent(args_section(specs), "    ")
    return cls


# --- classes a config switches on by name -------------------------------------------------------
class Registry:
    """The `Configurable` classes that a config can switch on by their `name`: the regularisers of a
    tokenizer config, the training objectives of a run config.

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
            self.classes[name].options_with_defaults(options, f"{self.where} `{self.key}.{name}` option")

    def build(self, settings: Mapping | None) -> dict[str, Any]:
        """One instance per name switched on in `settings` (name -> options), in their order."""
        self.check_settings(settings)
        return {name: self.classes[name](**options) for name, options in (settings or {}).items()}


# Kinds of values shared by many options (call one with a default and a doc to declare an option).
CODEBOOK_SIZE = Option(int, low=2)
POSITIVE_INT = Option(int, low=1)
NON_NEGATIVE_INT = Option(int, low=0)
NON_NEGATIVE = Option(NUMBER, low=0)
POSITIVE = Option(NUMBER, low=0, low_open=True)
UNIT_INTERVAL = Option(NUMBER, low=0, high=1)
FLAG = Option(bool)
TEXT = Option(str)
