"""The ``unsee`` app, its global options (``--version``, ``-v``/``-q``) and what every
command shares: user errors as one line with exit code 2, and checks run before any model
is loaded. Nothing here imports torch, so ``unsee --help`` stays fast."""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from unsee.errors import UnseeError

#: Erasure methods (the registry's names: tests/test_cli_help.py keeps them equal) and judge
#: forms, listed in ``--help`` without importing torch.
METHODS = (
    "esd-x",
    "esd-u",
    "esd-all",
    "esd-x-strict",
    "uce",
    "kscu",
    "mim-mu",
    "sculpt",
    "salun",
    "ca",
)
JUDGES = "toyworld, nudenet, clip:MODEL, imagenet[:MODEL|:torchvision]"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make text-to-image diffusion models forget concepts, and measure it.",
    epilog=f"Methods (erase --method): {', '.join(METHODS)}; `unsee methods` "
    f"gives scopes and parameters. Judges (eval --judge): {JUDGES}. "
    "Example: unsee erase --model toyworld --method esd-x --concept star --out runs/star",
)
toyworld_app = typer.Typer(no_args_is_help=True, help="The bundled ToyWorld model and judge.")
app.add_typer(toyworld_app, name="toyworld")

#: the package's logger: every module logs under it (``logging.getLogger(__name__)``)
log = logging.getLogger("unsee")
_FORMAT = logging.Formatter("%(levelname)s %(name)s: %(message)s")


def examples(*lines: str) -> str:
    """A command's ``--help`` epilog: one example command a line."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def set_verbosity(verbose: int, quiet: bool) -> None:
    """Log level of the ``unsee`` logger: warnings by default, ``-v`` info, ``-vv`` debug,
    ``-q`` errors only. Progress bars are not log records and are unaffected."""
    if verbose and quiet:
        raise UnseeError("give -v or -q, not both")
    level = (
        logging.ERROR
        if quiet
        else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    )
    # one handler, on the stderr of this invocation (stdout keeps only the results; a test
    # runner swaps stderr between invocations)
    for old in [h for h in log.handlers if h.formatter is _FORMAT]:
        log.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FORMAT)
    log.addHandler(handler)
    log.setLevel(level)


def _print_version(value: bool) -> None:
    if value:
        from unsee import __version__

        typer.echo(f"unsee {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="log what unsee does (-v info, -vv debug)"
        ),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="log errors only (progress bars stay)")
    ] = False,
) -> None:
    """Make text-to-image diffusion models forget concepts, and measure it."""
    try:
        set_verbosity(verbose, quiet)
    except UnseeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def user_error(exc: BaseException) -> UnseeError | None:
    """The one-line :class:`UnseeError` for an exception that bad input or the machine
    (a full or read-only disk, a file that is not text, an image bomb) can cause, else None:
    anything else is a bug and keeps its traceback."""
    from PIL import Image
    from pydantic import ValidationError

    from unsee.errors import validation_error

    if isinstance(exc, UnseeError):
        return exc
    if isinstance(exc, ValidationError):
        return validation_error(exc, "invalid input")
    if isinstance(exc, UnicodeDecodeError):
        return UnseeError(f"a file given is not UTF-8 text ({exc.reason} at byte {exc.start})")
    if isinstance(exc, Image.DecompressionBombError):
        return UnseeError(f"refusing an image: {exc}")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return UnseeError(f"{exc.strerror or exc}{where}")
    return None


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors (:func:`user_error`) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            err = user_error(exc)
            if err is None:
                raise
            log.debug("user error", exc_info=exc)  # -vv shows where it came from
            typer.echo(f"error: {' '.join(str(err).split())}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def positive(name: str, value: int | float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise UnseeError(f"{name} must be positive and finite (got {value})")


def sampling_options(steps: int, guidance: float | None, seed: int) -> None:
    """Checks shared by every command that samples, before any model is loaded."""
    from unsee.models.sampling import check_guidance_and_seed

    positive("--steps", steps)
    check_guidance_and_seed(guidance, seed)
