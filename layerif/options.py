"""Typed arguments of registered components (sparsity methods, pruners), and their CLI flags.

A component class has an `Arguments` dataclass whose fields are declared with `option(...)`:
the default, the CLI flag that sets it and the flag's help. `build` makes a component from a
registry by name with keyword options; `add_flags` and `chosen_options` turn every field of
every registered component into one flag (a flag shared by components whose field has the same
name is added once) and read back the chosen component's values, refusing a flag that belongs
to another component.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

from .errors import LayerIFError


@dataclass
class NoArguments:
    """A component without options."""


class Component:
    """A registered component: `Arguments` is its dataclass of options, `args` an instance."""

    Arguments: ClassVar[type] = NoArguments

    def __init__(self, args=None):
        self.args = args if args is not None else self.Arguments()


def option(default, flag: str, help: str, choices: tuple | None = None):  # noqa: A002
    """A component argument: its default, the CLI flag that sets it, the flag's help (argparse
    format: a literal percent sign is %%) and its allowed values."""
    return field(default=default, metadata={"flag": flag, "help": help, "choices": choices})


def build(registry: dict, name, kind: str, error: type[Exception] = LayerIFError, **options):
    """registry[name] made with its Arguments from `options` (None = the default); an unknown
    name or an option it does not take is refused with `error`, naming the choices."""
    if name not in registry:
        raise error(f"unknown {kind} {name!r}; use one of {', '.join(registry)}.")
    cls = registry[name]
    known = {f.name for f in fields(cls.Arguments)}
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        raise error(f"{kind} {name} takes no option {', '.join(unknown)} (it takes "
                    f"{', '.join(sorted(known)) or 'none'}).")
    return cls(cls.Arguments(**given))


def finite_float(text: str) -> float:
    """argparse type: a finite number (inf and nan are refused here, not after the work, when
    a JSON writer or a formula would meet them)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _dest(flag: str) -> str:
    return "option_" + flag.lstrip("-").replace("-", "_")


def add_flags(parser, registry: dict) -> None:
    """One flag per argument of every component in `registry`; unset flags are None, so each
    component takes its own default. A bool argument's flag stores the opposite of its
    default (--no-smooth)."""
    seen = set()
    for cls in registry.values():
        for f in fields(cls.Arguments):
            flag = f.metadata.get("flag")
            if flag is None or flag in seen:
                continue
            seen.add(flag)
            if isinstance(f.default, bool):
                parser.add_argument(flag, dest=_dest(flag), action="store_const",
                                    const=not f.default, default=None, help=f.metadata["help"])
            else:
                kind = (finite_float if "float" in str(f.type) else
                        int if "int" in str(f.type) else str)
                parser.add_argument(flag, dest=_dest(flag), type=kind, default=None,
                                    metavar=f.name.upper(), choices=f.metadata["choices"],
                                    help=f.metadata["help"])


def chosen_options(args, registry: dict, name: str, kind: str) -> dict:
    """registry[name]'s arguments as given on the command line (None where not given); a flag
    of another component is refused rather than ignored."""
    own = {f.metadata["flag"]: f for f in fields(registry[name].Arguments)
           if f.metadata.get("flag")}
    for cls in registry.values():
        for f in fields(cls.Arguments):
            flag = f.metadata.get("flag")
            if flag and flag not in own and getattr(args, _dest(flag), None) is not None:
                users = [n for n, c in registry.items()
                         if any(g.metadata.get("flag") == flag for g in fields(c.Arguments))]
                raise LayerIFError(f"{flag} applies to {kind} {' and '.join(users)}, not "
                                   f"{name}; drop it or choose that {kind}.")
    return {f.name: getattr(args, _dest(flag)) for flag, f in own.items()}
