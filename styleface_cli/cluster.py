"""``--ray ADDRESS``: the inputs of one run spread over a Ray cluster, one report written by the driver.

The driver (the ``styleface`` process) plans the run, makes the ``--resume`` decisions and appends the
report exactly as a local run does (``api.execute``); only the processing of the remaining inputs moves
to the cluster. There, a fixed set of long-lived actors each hold one loaded ``api.Anonymizer`` (or a
``prepare-data`` detector) and take one input per actor call; each actor reserves ``--ray-cpus`` CPUs and
``--ray-gpus`` GPUs (fractions allowed: 0.25 lets four actors share one GPU), and there are as many
actors as the cluster's resources hold, never more than there are inputs. Each actor has one call out at
a time, so memory and the driver's bookkeeping stay bounded by the number of actors.

Why actors and not Ray Data (``docs/cluster.md``): an input here is a whole file (seconds to hours of
video), not a row; the driver needs each input's record the moment it is done (report, progress,
``--resume``), needs to know which input a lost worker was running so that exactly that one is retried
(and its half-written temporary removed), and must turn an input that fails on its own into one error
record, not a retried batch. Plain actor calls give all of that directly.

Faults. An input whose actor process or node dies is retried by the driver on a replacement actor, up
to ``--ray-retries`` times, and then reported as an error. Before a retry the driver deletes the dead attempt's temporary files of that output
(the shared file system makes them visible from the driver; no live process of this run writes that
output), and the retry may replace an output the dead attempt had already finished. An input that fails
on its own (a corrupt file: ``StylefaceError``) is an ordinary error record and is never retried.

Stopping. Ctrl-C (or SIGTERM) on the driver cancels every call: a running one sees the cancellation at
its next frame and leaves through its clean-ups (no partial file), then the actors are killed and any
temporaries of inputs in flight are removed. A driver killed outright (SIGKILL) takes its actors with it
(Ray ends a job's actors when its driver goes); the next run's ``--resume`` removes the temporaries they
left and does the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from styleface_cli.atomic import partials
from styleface_cli.config import AnonymizeConfig
from styleface_cli.errors import ConfigError, ExitCode, Stopped, StylefaceError
from styleface_cli.inputs import Job
from styleface_cli.report import RunInfo, new_record

INSTALL_HINT = "pip install 'styleface-cli[ray]' (or: pip install 'ray>=2.9,<3')"
# One call per actor at a time, so that when an actor dies the driver knows which input it was running.
# (With a second call queued, a death can also lose the reply of the call that had just finished, and
# the innocent input would be charged a retry.) The gap between two inputs is one round trip.
_IN_FLIGHT_PER_ACTOR = 1
_CANCEL_WAIT_S = 20.0  # how long cancelled calls get to leave through their clean-ups
_KILL_ONCE = "STYLEFACE_TEST_RAY_KILL_ONCE"  # test hook: "NAME:MARKER" kills the actor once on input NAME

Item = TypeVar("Item")


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """Where and how a run uses Ray; built once at the CLI edge (``build_ray_config``)."""

    address: str = "local"  # "local" (a Ray started here for this run) | "auto" | "ray://host:port" | "host:port"
    cpus: float = 1.0  # CPUs each actor reserves
    gpus: float = 0.0  # GPUs each actor reserves (fractions share a GPU)
    retries: int = 2  # times an input is retried after its worker process or node died


def build_ray_config(*, address: str, cpus: float, gpus: float, retries: int) -> RayConfig:
    """``--ray``, ``--ray-cpus``, ``--ray-gpus``, ``--ray-retries`` checked; Ray must be importable."""
    require_ray()
    address = address.strip()
    if not address:
        raise ConfigError("--ray takes an address: local, auto, ray://HOST:PORT or HOST:PORT")
    if cpus < 0 or gpus < 0 or (cpus == 0 and gpus == 0):
        raise ConfigError(f"--ray-cpus and --ray-gpus must be >= 0 and not both 0; got {cpus} and {gpus}")
    if gpus > 1 and gpus != int(gpus):
        raise ConfigError(f"--ray-gpus above 1 must be a whole number; got {gpus}")
    if retries < 0:
        raise ConfigError(f"--ray-retries must be at least 0; got {retries}")
    return RayConfig(address=address, cpus=cpus, gpus=gpus, retries=retries)


def require_ray():
    """The ``ray`` module, or ``ConfigError`` (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def connected(cfg: RayConfig) -> Iterator[Any]:
    """Ray, connected to ``cfg.address`` (an existing connection of this process is reused).

    A Ray that this call started or connected is shut down again at the end. Worker logs stay in the
    cluster's log folder (``/tmp/ray/session_latest/logs``): stdout here is for results.
    """
    import logging

    ray = require_ray()
    if ray.is_initialized():
        with _messages_on_stderr(ray):
            yield ray
        return
    address = None if cfg.address.lower() == "local" else cfg.address
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address is not None and "://" in address:
        options = {}  # Ray Client forwards options to the cluster's own init; it takes none of these
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(f"--ray {cfg.address}: cannot connect to the Ray cluster: {error}".splitlines()[0]) from error
    try:
        with _messages_on_stderr(ray):
            yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _messages_on_stderr(ray) -> Iterator[None]:
    """Ray's driver prints the cluster's error messages ("(raylet) A worker died ...") on *stdout*, which
    is for results (``--json``); send them to stderr while a run uses Ray. Ray has no option for this:
    the hook is its module-level ``print_to_stdstream`` (left alone when a Ray version lacks it)."""
    module = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(module, "print_to_stdstream", None)
    printer = getattr(module, "print_worker_logs", None)
    if original is None or printer is None:
        yield
        return

    def to_stderr(data, ignore_prefix: bool) -> None:
        printer(data, sys.stderr, ignore_prefix)

    module.print_to_stdstream = to_stderr
    try:
        yield
    finally:
        module.print_to_stdstream = original


def actor_count(ray, cfg: RayConfig, items: int) -> int:
    """How many actors the cluster's resources hold (at least one, at most one per input)."""
    resources = ray.cluster_resources()
    fits = []
    if cfg.cpus > 0:
        fits.append(math.floor(resources.get("CPU", 0) / cfg.cpus + 1e-9))
    if cfg.gpus > 0:
        if not resources.get("GPU"):
            raise ConfigError(f"--ray-gpus {cfg.gpus}: the Ray cluster has no GPUs")
        fits.append(math.floor(resources["GPU"] / cfg.gpus + 1e-9))
    if min(fits) < 1:
        raise ConfigError(f"no node of the Ray cluster has {cfg.cpus} CPUs and {cfg.gpus} GPUs free for one actor "
                          f"(cluster: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)")
    return max(1, min(min(fits), items))


# -------------------------------------------------------------------------------------------------
# The actor


class _Worker:
    """One Ray actor: ``factory()`` builds its task once (models loaded), then ``run`` calls it per item.

    An error while building is kept and returned by every call (the driver then stops the run, as a
    ``--jobs`` worker whose models cannot be loaded does); nothing raises out of the constructor, so a
    missing model is one clear error, not a string of "dead" actors charged to innocent inputs.
    """

    def __init__(self, factory: Callable[[], Callable[[Any, bool], Any]], threads: int, cwd: str) -> None:
        if os.path.isdir(cwd):  # the driver's folder (shared file system): relative paths mean the same files
            os.chdir(cwd)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(threads)
        self.error: str | None = None
        self.failure: StylefaceError | None = None
        try:
            self.task = factory()
        except StylefaceError as error:
            self.failure = error
        except Exception as error:  # a bug: the run stops with it
            self.error = f"{type(error).__name__}: {error}"

    def run(self, item: Any, retry: bool) -> tuple[str, Any]:
        if self.failure is not None:
            return "failed", self.failure
        if self.error is not None:
            return "broken", self.error
        return "done", self.task(item, retry)


def _kill_once_for_tests(name: str) -> None:
    """Test hook (``STYLEFACE_TEST_RAY_KILL_ONCE=NAME:MARKER``): on input NAME, SIGKILL this actor's own
    process once (the marker file records that it happened), as a lost node would."""
    spec = os.environ.get(_KILL_ONCE)
    if not spec:
        return
    target, _, marker = spec.partition(":")
    if name == target and marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def _cancelled() -> bool:
    import ray

    return ray.get_runtime_context().is_canceled()


def _stop_when_cancelled(on_frame=None):
    """An ``on_frame`` callback that raises ``Stopped`` once the driver cancelled this call."""
    checked = {"at": 0.0}

    def check(faces) -> None:
        now = time.monotonic()
        if now - checked["at"] >= 0.1:
            checked["at"] = now
            if _cancelled():
                raise Stopped(signal.SIGINT)
        if on_frame is not None:
            on_frame(faces)

    return check


# -------------------------------------------------------------------------------------------------
# The driver


def run_items(items: Sequence[Item], *, factory: Callable[[], Callable[[Item, bool], Any]], cfg: RayConfig,
              lost: Callable[[Item, str], Any], clean: Callable[[Item], None]) -> Iterator[tuple[Item, Any]]:
    """``(item, result)`` for every item, in completion order, from actors built by ``factory``.

    ``factory`` runs once in each actor and returns ``task(item, retry) -> result``; ``retry`` is true when
    an earlier attempt's process died. ``lost(item, message)`` is the result of an item whose process died
    more than ``cfg.retries`` times, or whose task raised something unexpected (a bug: not retried); ``clean(item)`` removes what a dead attempt may have left (it runs on
    the driver before every retry, and for the items in flight when the run is stopped).
    """
    with _signals_deferred() as check_signals, connected(cfg) as ray:  # a Ctrl-C while connecting counts too
        pool = _Pool(ray, items, factory=factory, cfg=cfg, lost=lost, clean=clean)
        try:
            yield from pool.results(check_signals)
        finally:
            pool.stop()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[Callable[[], None]]:
    """Stop signals noted, not raised, while the driver works with Ray; ``check()`` raises ``Stopped``.

    An exception raised by a signal handler inside one of Ray's blocking calls (``ray.wait``) comes out
    as a ``SystemError``, and the clean-ups after it would be interrupted again; so SIGINT, SIGTERM and
    SIGHUP only set a flag here, and the driver's loop raises between calls (within a second).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(signum)
        if handler is not signal.SIG_IGN and handler is not None:  # nohup's SIGHUP stays ignored
            previous[signum] = signal.signal(signum, lambda number, frame: received.append(number))

    def check() -> None:
        if received:
            raise Stopped(received[0])

    try:
        yield check
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Pool:
    """The driver's side: actors, the calls queued on each, and what to do when one of them dies."""

    def __init__(self, ray, items: Sequence[Item], *, factory, cfg: RayConfig, lost, clean) -> None:
        self.ray, self.items, self.cfg, self.lost, self.clean = ray, items, cfg, lost, clean
        threads = max(1, math.floor(cfg.cpus)) if cfg.cpus else 1
        env = {key: value for key, value in os.environ.items() if key.startswith("STYLEFACE_")}
        self.remote = ray.remote(_Worker).options(num_cpus=cfg.cpus, num_gpus=cfg.gpus, max_restarts=0,
                                                  max_task_retries=0, runtime_env={"env_vars": env} if env else None)
        self.factory, self.threads = factory, threads
        self.actors: dict[int, Any] = {}
        self.queues: dict[int, list] = {}  # actor id -> its calls out (at most _IN_FLIGHT_PER_ACTOR)
        self.calls: dict[Any, tuple[int, int]] = {}  # call -> (actor id, item index)
        self.deaths = [0] * len(items)  # how often each item's process died
        self.waiting = list(range(len(items)))[::-1]  # a stack: pop() is the next item, a retry is pushed
        self.next_actor = 0
        for _ in range(actor_count(ray, cfg, len(items))):
            self._start_actor()

    def _start_actor(self) -> None:
        self.actors[self.next_actor] = self.remote.remote(self.factory, self.threads, os.getcwd())
        self.queues[self.next_actor] = []
        self.next_actor += 1

    def _submit(self) -> None:
        for actor_id, queue in self.queues.items():
            while self.waiting and len(queue) < _IN_FLIGHT_PER_ACTOR:
                index = self.waiting.pop()
                call = self.actors[actor_id].run.remote(self.items[index], self.deaths[index] > 0)
                queue.append(call)
                self.calls[call] = (actor_id, index)

    def results(self, check_signals: Callable[[], None]) -> Iterator[tuple[Item, Any]]:
        done = 0
        while done < len(self.items):
            check_signals()
            self._submit()
            ready, _ = self.ray.wait(list(self.calls), num_returns=1, timeout=0.5)
            if not ready:
                continue
            call = ready[0]
            actor_id, index = self.calls[call]
            try:
                kind, value = self.ray.get(call)
            except self.ray.exceptions.RayActorError as error:  # the actor's process or its node died
                for result in self._actor_died(actor_id, error):
                    done += 1
                    yield result
                continue
            except self.ray.exceptions.RayTaskError as error:  # a bug met on this input: its error, no retry
                cause = error.cause if getattr(error, "cause", None) is not None else error
                kind, value = "done", self.lost(self.items[index], f"unexpected error in the Ray worker: "
                                                                   f"{type(cause).__name__}: {cause}".splitlines()[0])
            del self.calls[call]
            self.queues[actor_id].remove(call)
            if kind == "failed":  # the models could not be loaded: the whole run fails
                raise value
            if kind == "broken":
                raise RuntimeError(f"a Ray actor could not start: {value}")
            done += 1
            yield self.items[index], value

    def _actor_died(self, actor_id: int, error: Exception) -> Iterator[tuple[Item, Any]]:
        """Retry (or give up on) the item the dead actor was running; start a replacement actor."""
        self.actors.pop(actor_id)
        queue = self.queues.pop(actor_id)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        for call in queue:
            _, index = self.calls.pop(call)
            self.deaths[index] += 1
            self.clean(self.items[index])
            if self.deaths[index] > self.cfg.retries:
                message = (f"the Ray worker process died {self.deaths[index]} times on this input "
                           f"(--ray-retries {self.cfg.retries}); last: {reason}")
                yield self.items[index], self.lost(self.items[index], message)
            else:
                self.waiting.append(index)
        if self.waiting:
            self._start_actor()

    def stop(self) -> None:
        """Cancel every call still out, kill the actors, remove what the calls in flight left."""
        ray, pending = self.ray, list(self.calls)
        for call in pending:
            with contextlib.suppress(Exception):
                ray.cancel(call)
        if pending:  # running calls see the cancellation at their next frame and clean up
            with contextlib.suppress(Exception):
                ray.wait(pending, num_returns=len(pending), timeout=_CANCEL_WAIT_S)
        for actor in self.actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if pending:
            with contextlib.suppress(Exception):
                ray.wait(pending, num_returns=len(pending), timeout=5.0)
        for _, index in self.calls.values():
            self.clean(self.items[index])
        self.calls.clear()


# -------------------------------------------------------------------------------------------------
# styleface anonymize --ray


def anonymize_runner(ray_cfg: RayConfig):
    """The ``runner`` of ``api.execute`` that sends the remaining inputs to Ray actors."""
    return functools.partial(run_anonymize, ray_cfg=ray_cfg)


def run_anonymize(todo: list[tuple[Job, str | None]], *, cfg: AnonymizeConfig, info: RunInfo, overwrite: bool,
                  ray_cfg: RayConfig, progress=None) -> Iterator[dict[str, Any]]:
    """Records of ``todo`` from Ray actors, in completion order (what ``workers.run_in_workers`` does locally)."""
    actor_cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, workers=max(1, math.floor(ray_cfg.cpus))))
    if cfg.method == "styleface":  # the generator runs where the actor's resources are, not where the driver is
        device = "cuda" if ray_cfg.gpus > 0 else "cpu"  # Ray points CUDA_VISIBLE_DEVICES at the actor's GPU
        actor_cfg = dataclasses.replace(actor_cfg, generate=dataclasses.replace(cfg.generate, device=device))
    factory = functools.partial(_anonymizer_task, actor_cfg, info, overwrite)
    # (job, reason, whether a retry may replace the output): only outputs absent before the run, which
    # a dead attempt may have finished before it could report it
    items = [(job, reason, not job.output.exists()) for job, reason in todo]

    def lost(item, message: str) -> dict[str, Any]:
        job, reason, _ = item
        return new_record(job, info, status="error", reason=reason, exit_code=int(ExitCode.FAILURE),
                          error=f"{job.source}: {message}")

    def clean(item) -> None:
        for temporary in partials(item[0].output):
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    for (job, _, _), record in run_items(items, factory=factory, cfg=ray_cfg, lost=lost, clean=clean):
        if record is None:  # cancelled: the run is stopping
            continue
        if progress is not None:
            progress.finished(job, record)
        yield record


def _anonymizer_task(cfg: AnonymizeConfig, info: RunInfo, overwrite: bool):
    """Runs in the actor: load the models once; return the per-input task."""
    from styleface_cli.api import Anonymizer

    if cfg.method == "styleface":
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    anonymizer = Anonymizer(cfg, info=info)

    def task(item: tuple[Job, str | None, bool], retry: bool) -> dict[str, Any] | None:
        job, reason, replaceable = item
        _kill_once_for_tests(job.source.name)
        try:
            return anonymizer.process(job, overwrite=overwrite or (retry and replaceable), reason=reason,
                                      on_frame=_stop_when_cancelled())
        except Stopped:
            return None

    return task


# -------------------------------------------------------------------------------------------------
# styleface prepare-data --ray


def run_prepare(todo: list, config) -> Iterator[list[dict]]:
    """The records of each ``prepare-data`` source (``train.prepare.Source``), from Ray actors."""
    ray_cfg = config.ray
    threads = max(1, math.floor(ray_cfg.cpus))
    actor_config = dataclasses.replace(config, workers=1, ray=None,
                                       detect=dataclasses.replace(config.detect, threads=threads))

    def lost(source, message: str) -> list[dict]:
        return [{"source": source.path.as_posix(), "identity": source.identity, "frame": None, "skipped": message}]

    # a dead attempt's crops are rewritten under the same names by the retry: nothing to clean
    for _, records in run_items(todo, factory=functools.partial(_prepare_task, actor_config), cfg=ray_cfg,
                                lost=lost, clean=lambda source: None):
        yield records


def _prepare_task(config):
    """Runs in the actor: load the detector once; return the per-source task."""
    from styleface_cli.train import prepare

    prepare._init_worker(config)

    def task(source, retry: bool) -> list[dict]:
        _kill_once_for_tests(source.path.name)
        return prepare._process_source(source)

    return task
