"""Derive an argparse command line from config dataclasses (the litgpt way).

Every field becomes `--field-name`; its help is the field's docstring, its default the field's
default, its choices the field's `Literal` type. After parsing, the dataclass itself validates the
values, and any `ConfigError` becomes an argparse error: a message naming the flag and exit
status 2, before any work starts. Unknown flags are rejected by argparse.

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, TrainConfig)
    args = parser.parse_args()
    config = dataclass_from_args(parser, TrainConfig, args)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from functools import cache
from typing import Any, TypeVar

from softmaxreg.config import ConfigError

T = TypeVar("T")


@cache
def field_docstrings(cls: type) -> dict[str, str]:
    """Map each dataclass field to the string literal written under it in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, following in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _argument_spec(annotation: Any) -> dict[str, Any]:
    """argparse keyword arguments (type, choices, nargs) for one field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return {"type": type(args[0]), "choices": list(args)}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {**_argument_spec(args[0]), "nargs": "+"}
        return {**_argument_spec(args[0]), "nargs": len(args)}
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        spec = _argument_spec(non_none[0])
        return spec
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float, str):
        return {"type": annotation}
    raise TypeError(f"no command-line mapping for field type {annotation!r}")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    title: str | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Add one `--flag` per field of dataclass `cls` to `parser` (fields in `skip` excluded)."""
    hints = typing.get_type_hints(cls, include_extras=False)
    docs = field_docstrings(cls)
    group = parser.add_argument_group(title or cls.__name__, (cls.__doc__ or "").strip())
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        spec = _argument_spec(hints[field.name])
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        shown_default = " ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = docs.get(field.name, "")
        if help_text and shown_default != "":  # an empty default is explained by the docstring
            help_text = f"{help_text} (default: {shown_default!s})"
        help_text = help_text or None
        if help_text is not None:
            help_text = help_text.replace("%", "%%")  # argparse %-formats help strings
        metavar = None
        if spec.get("nargs") == 2 and field.name.endswith("_range"):
            metavar = ("MIN", "MAX")
        group.add_argument(
            flag_name(field.name),
            dest=field.name,
            default=argparse.SUPPRESS,  # unset flags keep the dataclass default
            help=help_text,
            metavar=metavar,
            **spec,
        )


def dataclass_from_args(
    parser: argparse.ArgumentParser, cls: type[T], args: argparse.Namespace
) -> T:
    """Build `cls` from the parsed flags; an invalid value becomes `parser.error` (exit 2)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in names}
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    try:
        return cls(**values)
    except ConfigError as error:
        parser.error(with_flag_names(str(error), names))
    raise AssertionError("unreachable")  # parser.error exits


def with_flag_names(message: str, names: set[str]) -> str:
    """Rewrite 'batch_size=0 is invalid' as '--batch-size 0 is invalid' for CLI users."""
    for name in sorted(names, key=len, reverse=True):
        if message.startswith(f"{name}="):
            value = message[len(name) + 1 :].split(" is invalid", 1)[0]
            return f"{flag_name(name)} {value} is invalid" + message.split(" is invalid", 1)[1]
    return message
