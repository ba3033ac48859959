"""Typed errors raised by the core; only the CLI turns them into exit codes and one-line messages.

Every error carries a message that reads well on its own, on one line, so the CLI can print
``styleface: error: <message>`` and nothing else (the traceback only with ``--debug``).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented exit codes of the ``styleface`` command (the README lists them)."""

    OK = 0
    FAILURE = 1  # an unexpected internal error (a bug): please report it
    USAGE = 2  # bad command-line usage (Typer/Click's own code)
    INPUT = 3  # an input is missing, unreadable, corrupt, or of the wrong kind
    OUTPUT = 4  # an output cannot be written (exists, equals the input, folder not writable)
    WEIGHTS = 5  # a checkpoint or model file is missing, corrupt, or does not match
    KERNEL = 6  # a compiled kernel failed to build or load under --kernels compiled
    PARTIAL = 7  # several inputs were given and at least one of them failed
    VERIFY_FAILED = 8  # styleface verify: a face is untouched or recognisable, or identifying metadata remains
    HANGUP = 129  # SIGHUP (the terminal went away)
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM (kill, a job scheduler's time limit)


class StylefaceError(Exception):
    """Base class of every error the core raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE


class InputError(StylefaceError):
    """An input file is missing, unreadable, corrupt, truncated, or not a video/image."""

    exit_code = ExitCode.INPUT


class OutputError(StylefaceError):
    """An output cannot be written: it exists, it is the input, or its folder is not writable."""

    exit_code = ExitCode.OUTPUT


class ConfigError(StylefaceError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = ExitCode.USAGE


class WeightsError(StylefaceError):
    """A checkpoint or model file is missing, corrupt, or does not match the network."""

    exit_code = ExitCode.WEIGHTS


class KernelBuildError(StylefaceError):
    """A compiled kernel could not be built or loaded (the message names the build log)."""

    exit_code = ExitCode.KERNEL


class Stopped(BaseException):
    """The run was stopped by a signal (SIGINT, SIGTERM, SIGHUP): not an error, so not a StylefaceError.

    A ``BaseException`` like ``KeyboardInterrupt``, so it passes every ``except Exception`` and every
    clean-up (``finally``, ``atomic_output``) runs on its way out; the CLI exits ``128 + signal``.
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        super().__init__("interrupted" if name == "SIGINT" else f"stopped by {name}")
