"""The Typer app and what every command shares: one-line errors, the two consoles (on which
whatever a user or a file supplied prints as given: see :mod:`resnext_deploy.terminal`)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from resnext_deploy.errors import DeployError
from resnext_deploy.terminal import SafeConsole, never_fail_to_encode, plain, styled

if TYPE_CHECKING:
    from resnext_deploy.artifact import Artifact

USAGE_EXIT_CODE = 1  # as for every other bad input (README, "Commands")
# Click's UsageError: Typer >= 0.29 vendors its own copy of Click, older ones use Click itself.
UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


@contextmanager
def usage_errors_on_one_line() -> Iterator[None]:
    """Click reports a bad command line (unknown option, missing argument, value out of range) in
    a boxed panel with exit status 2; report it like any other bad input instead: one ``error:``
    line on stderr and exit status 1. A bare ``resnext-deploy`` still prints the help."""
    try:
        yield
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        fail(text.rstrip(". ") + where, USAGE_EXIT_CODE)


class OneLineErrorsGroup(TyperGroup):
    """The command group, with usage errors on one line (see :func:`usage_errors_on_one_line`)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with usage_errors_on_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with usage_errors_on_one_line():
            return super().invoke(ctx)


app = typer.Typer(
    name="resnext-deploy",
    cls=OneLineErrorsGroup,
    help="Export, verify, run and benchmark ResNeXt image classifiers (TorchScript + ONNX).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
out = SafeConsole()
err = SafeConsole(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def fail(message: str, exit_code: int = 1) -> NoReturn:
    """One ``error:`` line on stderr (``message`` as given, on one line) and exit
    ``exit_code``."""
    err.print(styled("error:", "bold red"), plain(message), highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code) from None


def handles_errors(func: F) -> F:
    """Turn :class:`DeployError` into one clear line and a non-zero exit, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from resnext_deploy.interrupts import Interrupted, handle_signals, raise_if_interrupted

        try:
            with handle_signals():  # SIGTERM cleans up like Ctrl-C
                try:
                    return func(*args, **kwargs)
                except DeployError:
                    raise_if_interrupted()  # torch.onnx.export turns Ctrl-C into its own error
                    raise
        except DeployError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            signal_exc = exc if isinstance(exc, Interrupted) else Interrupted()
            err.print(
                f"interrupted ({signal_exc}); nothing half-written was left behind",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(signal_exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def command_line() -> str:
    """The command as the user typed it, for result files."""
    return "resnext-deploy " + " ".join(sys.argv[1:])


def warn_unlisted(artifact: Artifact) -> None:
    """Files in an export that its manifest does not list are never used; say so on stderr."""
    if artifact.unlisted:
        err.print(
            styled("warning:", "yellow"),
            f"{artifact.path} holds files its manifest does not list, which are not used: "
            + plain(", ".join(artifact.unlisted)),
            highlight=False,
            soft_wrap=True,
        )


def emit_json(data: Any) -> None:
    """``data`` as the one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def main() -> None:
    never_fail_to_encode()
    app()
