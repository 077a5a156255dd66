"""Command lines from config dataclasses: one dataclass per program, flags generated from it.

Each field becomes `--field-name` with its `help` metadata as help text, and may also be set by an
environment variable (`<PREFIX>FIELD_NAME`, flags win). Errors are one line on stderr and exit 2:
argparse's usage dump is replaced, and commands raise `UsageError` for mistakes that only the
program can detect (a missing file, a foreign checkpoint).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, Union

from swingup.interrupts import forget_unhandled_interrupt, interrupted

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake of the user's: reported as one line, exit code 2, never a traceback."""


def at_least_one(*flags: tuple[str, int]) -> None:
    """UsageError naming the first of these (flag, value) pairs whose value is below 1."""
    for flag, value in flags:
        if value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")


class Failed(Exception):
    """A failure at run time, not a mistake (the disk, the server): one line, exit code 1."""


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    positional: bool = False,
    path: bool = False,
    shown: str | None = None,
) -> Any:
    """A config field: its default, its one-line help, whether it is positional.

    `path`: the value names a file or directory, so an empty or "none" value given explicitly
    is an error (rather than None, the flag left out: `--resume ""` must not start a new run).
    `shown`: the default as --help states it, when the field's own default would mislead ("" to
    state none).
    """
    meta = {"help": help, "positional": positional, "path": path, "shown": shown}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional[...]: return the inner type and whether None was allowed."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _converter(
    tp: Any, name: str, path: bool = False
) -> tuple[Callable[[str], Any], list[Any] | None]:
    base, optional = _base_type(tp)
    choices: list[Any] | None = None
    if typing.get_origin(base) is Literal:
        choices = list(typing.get_args(base))
        base = type(choices[0])

    def convert(text: str) -> Any:
        if path and text.strip().lower() in ("", "none"):
            raise argparse.ArgumentTypeError(
                f"expected a path, got {text!r} (leave the flag out instead)"
            )
        if optional and text.lower() in ("", "none"):
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {base.__name__} value: {text!r}") from None

    convert.__name__ = base.__name__
    return convert, choices


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def add_config(parser: argparse.ArgumentParser, cls: type, env_prefix: str | None) -> None:
    """Add one flag per field of the dataclass `cls` to `parser`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        tp = hints[f.name]
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        env_name = f"{env_prefix}{f.name.upper()}" if env_prefix else None
        if env_name and env_name in os.environ:
            default = _from_env(env_name, os.environ[env_name], tp)
        path = bool(f.metadata.get("path"))
        if f.metadata.get("positional"):
            convert, choices = _converter(tp, f.name, path)
            parser.add_argument(f.name, type=convert, choices=choices, help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        suffix = f" (env {env_name})" if env_name else ""
        if _base_type(tp)[0] is bool:
            stated = f.metadata.get("shown")
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"{help_text}{f' [default: {stated}]' if stated else ''}{suffix}",
            )
            continue
        convert, choices = _converter(tp, f.name, path)
        stated = f.metadata.get("shown")
        # None is "not given": the help says what that means, as "(none: ...)" where it matters.
        shown = "" if default in (dataclasses.MISSING, None) else f" [default: {default}]"
        if stated is not None:
            shown = f" [default: {stated}]" if stated else ""
        parser.add_argument(
            flag,
            dest=f.name,
            type=convert,
            choices=choices,
            default=default,
            required=default is dataclasses.MISSING,
            help=f"{help_text}{shown}{suffix}",
            metavar=_metavar(choices, convert, path),
        )


def _metavar(choices: list[Any] | None, convert: Callable[[str], Any], path: bool) -> str:
    if choices:
        return "{" + ",".join(str(c) for c in choices) + "}"
    return "PATH" if path else convert.__name__.upper()


@dataclasses.dataclass(frozen=True)
class _BadEnv:
    """The default of a flag whose environment variable does not parse: reported only if the
    command that has the flag runs and the flag is not given (flags win)."""

    message: str


def _from_env(name: str, text: str, tp: Any) -> Any:
    base, _ = _base_type(tp)
    try:
        if base is bool:
            return _parse_bool(text)
        value = _converter(tp, name)[0](text)
    except (ValueError, argparse.ArgumentTypeError):
        return _BadEnv(f"environment variable {name}: invalid value {text!r}")
    choices = _converter(tp, name)[1]
    if choices and value not in choices:
        return _BadEnv(f"environment variable {name}: {text!r} is not one of {choices}")
    return value


def env_problem(namespace: argparse.Namespace) -> str | None:
    """The first environment variable the parsed command needed and could not read."""
    bad = [value for value in vars(namespace).values() if isinstance(value, _BadEnv)]
    return bad[0].message if bad else None


def to_config(cls: type[T], namespace: argparse.Namespace) -> T:
    """The config of a parsed command line; UsageError for an environment variable it needed
    that does not parse."""
    problem = env_problem(namespace)
    if problem:
        raise UsageError(problem)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in vars(namespace).items() if k in names})


Handler = Callable[..., int]


def run(
    prog: str,
    description: str,
    commands: dict[str, tuple[type, Handler, str]],
    argv: Sequence[str] | None = None,
    env_prefix: str | None = None,
    failures: tuple[type[Exception], ...] = (),
) -> int:
    """Parse `argv` into the chosen command's config and call its handler.

    `commands` maps a subcommand name to (config dataclass, handler, one-line help). With a
    single command named "" the program takes no subcommand. A UsageError is one line and exit
    2; Failed, and the program's own `failures`, one line and exit 1; Ctrl-C, while the flags
    are parsed or the command runs, one line and exit 130.
    """
    try:
        return _run(prog, description, commands, argv, env_prefix, failures)
    except KeyboardInterrupt:
        return interrupted(prog)
    finally:
        forget_unhandled_interrupt()  # a Ctrl-C the command caught may have left the mark


def _run(
    prog: str,
    description: str,
    commands: dict[str, tuple[type, Handler, str]],
    argv: Sequence[str] | None,
    env_prefix: str | None,
    failures: tuple[type[Exception], ...],
) -> int:
    parser = _Parser(prog=prog, description=description)
    parsers = {"": parser}
    if set(commands) == {""}:
        add_config(parser, commands[""][0], env_prefix)
    else:
        sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
        for name, (cls, _, help_text) in commands.items():
            parsers[name] = sub.add_parser(name, help=help_text, description=help_text)
            add_config(parsers[name], cls, env_prefix)
    namespace = parser.parse_args(argv)
    command = getattr(namespace, "command", "")
    problem = env_problem(namespace)
    if problem:  # in the words of the command that needed it: "swingup-client health: error"
        parsers[command].error(problem)
    cls, handler, _ = commands[command]
    chosen = (cls, handler)
    reported: tuple[type[Exception], ...] = (Failed, *failures)
    try:
        config: Any = to_config(chosen[0], namespace)
        return chosen[1](config)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 1  # stdout's reader left (`| head`): nothing to say, and no one to say it to
    except reported as exc:
        print(f"{prog}: error: {_described(exc)}", file=sys.stderr)
        return EXIT_FAILED


def _described(exc: Exception) -> str:
    """An OSError as its reason and the file it names; anything else as its message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + ("" if exc.filename is None else f": {exc.filename}")
    return str(exc)
