"""The ``styleface`` command: wires the per-command modules and turns typed errors into exit codes.

Commands only parse options, build the frozen config once and call a keyword-only core function.
Errors raised by the core (``styleface_cli.errors``) become one line on stderr and a documented exit
code; the traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import signal
import sys

import typer

from styleface_cli import __version__
from styleface_cli.errors import ExitCode, Stopped, StylefaceError

app = typer.Typer(
    name="styleface",
    help="Remove identities from video and photos, and swap faces, with the StyleFace generator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DEBUG = {"on": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"styleface {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _DEBUG["on"] = debug


# Each command module registers itself on ``app`` (one line each; keep them sorted).
for _name in ("anonymize", "doctor", "kernels", "model", "train", "verify"):
    try:
        _module = __import__(f"styleface_cli.cli.{_name}", fromlist=["register"])
    except ModuleNotFoundError as _error:  # a command whose module is not in this build
        if _error.name != f"styleface_cli.cli.{_name}":
            raise
        continue
    _module.register(app)


def _stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise ``Stopped`` in the main thread, so every clean-up runs (no partial
    output is left) and the exit code says which signal it was (130, 143, 129). Only the first one
    raises: the clean-ups it starts are not interrupted by a second."""

    def stop(signum, frame) -> None:
        for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(other, signal.SIG_IGN)
        raise Stopped(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(signum, stop)


def main() -> None:
    """Console-script entry point: click handles usage errors and exits; typed errors become one line."""
    _stop_on_signals()
    try:
        app()  # standalone: prints usage errors itself, ends in SystemExit with the command's code
    except Stopped as stopped:
        print(f"styleface: {stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except StylefaceError as error:
        if _DEBUG["on"]:
            raise
        print(f"styleface: error: {error}", file=sys.stderr)
        sys.exit(int(error.exit_code))
    except KeyboardInterrupt:
        print("styleface: interrupted", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as error:  # a bug: say so in one line, the traceback with --debug
        if _DEBUG["on"]:
            raise
        print(f"styleface: internal error: {type(error).__name__}: {error} (run with --debug for details)",
              file=sys.stderr)
        sys.exit(int(ExitCode.FAILURE))


if __name__ == "__main__":
    main()
