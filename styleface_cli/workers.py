"""``--jobs N``: N worker processes, each loading the models once and taking one input at a time.

Spawned, not forked (onnxruntime sessions, OpenCV and torch thread pools do not survive a fork). Each
worker gets ``cores // N`` CPU threads (detector calls in flight, torch and OpenMP threads), so the N
together fill the machine once; memory is bounded by N pipelines, whatever the dataset's size, because
at most two jobs per worker are queued at a time.

Stopping: workers ignore SIGINT (a Ctrl-C reaches the whole process group; the main process decides),
and turn SIGTERM into ``Stopped``, which abandons the input in flight through its clean-ups (no partial
file is left). The main process, stopped by a signal, sends SIGTERM to every worker, waits for them and
re-raises. Workers also get SIGTERM when the main process dies (Linux ``PR_SET_PDEATHSIG``). A worker
that dies on its own (killed, out of memory) reports its input as failed and is replaced.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import time
from collections import deque
from typing import Any, Iterator

from styleface_cli.atomic import remove_stale_partials
from styleface_cli.config import AnonymizeConfig
from styleface_cli.errors import ExitCode, Stopped, StylefaceError
from styleface_cli.inputs import Job
from styleface_cli.report import RunInfo, new_record

_PROGRESS_EVERY_S = 0.25  # frame counts are sent to the main process at most this often


def run_in_workers(todo: list[tuple[Job, str | None]], *, cfg: AnonymizeConfig, info: RunInfo, overwrite: bool,
                   workers: int, progress=None) -> Iterator[dict[str, Any]]:
    """Records of ``todo`` from ``workers`` processes, in completion order."""
    pool = _Pool(todo, cfg=cfg, info=info, overwrite=overwrite, workers=workers, report_frames=progress is not None)
    jobs = [job for job, _ in todo]
    try:
        pool.start()
        while pool.done < len(todo):
            try:
                message = pool.results.get(timeout=0.5)
            except queue.Empty:
                yield from pool.replace_dead()
                continue
            kind, worker_id = message[0], message[1]
            if kind == "failed":  # the models could not be loaded: the whole run fails
                raise message[2]
            if kind == "started" and progress is not None:
                progress.started(jobs[message[2]])
            elif kind == "frames" and progress is not None:
                progress.advanced(jobs[message[2]], message[3], message[4])
            elif kind == "done":
                record = pool.finished(worker_id, message[2], message[3])
                if progress is not None:
                    progress.finished(jobs[message[2]], record)
                yield record
    finally:
        pool.stop()


class _Pool:
    """Worker processes, each with its own task queue, so the main process always knows which inputs
    each one holds (at most two: the one in flight and the next)."""

    def __init__(self, todo, *, cfg: AnonymizeConfig, info: RunInfo, overwrite: bool, workers: int,
                 report_frames: bool) -> None:
        from styleface_cli.api import for_worker, threads_per_worker

        self.todo, self.info, self.workers = todo, info, min(workers, len(todo))
        self.context = multiprocessing.get_context("spawn")
        self.results = self.context.Queue()
        self.args = (for_worker(cfg, workers), info, overwrite, threads_per_worker(workers), report_frames)
        self.processes: dict[int, tuple[multiprocessing.Process, Any]] = {}  # id -> (process, its task queue)
        self.held: dict[int, deque[int]] = {}  # id -> indices in todo given to it, oldest (in flight) first
        self.next_index = 0
        self.done = 0
        self.started = 0

    def start(self) -> None:
        for _ in range(self.workers):
            self._start_worker()

    def _start_worker(self, inherit: list[int] = ()) -> None:
        if self.started >= 2 * self.workers + len(self.todo):  # workers die as they start: say so, do not loop
            raise StylefaceError(f"the worker processes keep dying ({self.started} started); run with --jobs 1 to see why")
        worker_id, tasks = self.started, self.context.Queue()
        self.started += 1
        process = self.context.Process(target=_worker_main, name=f"styleface-worker-{worker_id}", daemon=True,
                                       args=(worker_id, *self.args, tasks, self.results))
        process.start()
        self.processes[worker_id] = (process, tasks)
        self.held[worker_id] = deque()
        for index in inherit:
            self._give(worker_id, index)
        while len(self.held[worker_id]) < 2 and self._give(worker_id):
            pass

    def _give(self, worker_id: int, index: int | None = None) -> bool:
        if index is None:
            if self.next_index >= len(self.todo):
                return False
            index, self.next_index = self.next_index, self.next_index + 1
        self.held[worker_id].append(index)
        self.processes[worker_id][1].put((index, *self.todo[index]))
        return True

    def finished(self, worker_id: int, index: int, record: dict[str, Any]) -> dict[str, Any]:
        self.held[worker_id].remove(index)
        self.done += 1
        self._give(worker_id)
        return record

    def replace_dead(self) -> Iterator[dict[str, Any]]:
        """A record for the input of each worker that died on its own; a new worker takes its queue."""
        for worker_id, (process, tasks) in list(self.processes.items()):
            if process.is_alive():
                continue
            del self.processes[worker_id]
            tasks.cancel_join_thread()
            held = list(self.held.pop(worker_id))
            if held:
                job, reason = self.todo[held[0]]
                remove_stale_partials(job.output, refresh=True)  # what the dead worker was writing
                self.done += 1
                yield new_record(job, self.info, status="error", reason=reason, exit_code=int(ExitCode.FAILURE),
                                 error=f"{job.source}: the worker process died (exit code {process.exitcode})")
            self._start_worker(inherit=held[1:])

    def stop(self) -> None:
        """End every worker: idle ones are told to exit; busy ones (a stop by a signal, an error) get
        SIGTERM, which abandons their input in flight through its clean-ups."""
        for worker_id, (process, tasks) in self.processes.items():
            if not process.is_alive():
                continue
            if self.held.get(worker_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
            else:
                tasks.put(None)
        deadline = time.monotonic() + 20
        for process, tasks in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            tasks.cancel_join_thread()


# -------------------------------------------------------------------------------------------------
# In the worker process


def _raise_stopped(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-ups must not be interrupted again
    raise Stopped(signum)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the main process dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker_main(worker_id: int, cfg: AnonymizeConfig, info: RunInfo, overwrite: bool, threads: int,
                 report_frames: bool, tasks, results) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_stopped)
    _die_with_parent()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        from styleface_cli.api import Anonymizer

        if cfg.method == "styleface":
            import torch

            torch.set_num_threads(threads)
        try:
            anonymizer = Anonymizer(cfg, info=info)
        except StylefaceError as error:
            results.put(("failed", worker_id, error))
            return
        while True:
            task = tasks.get()
            if task is None:
                return
            index, job, reason = task
            results.put(("started", worker_id, index))
            on_frame = _frame_reporter(worker_id, index, results) if report_frames else None
            record = anonymizer.process(job, overwrite=overwrite, on_frame=on_frame, reason=reason)
            results.put(("done", worker_id, index, record))
    except Stopped:
        results.cancel_join_thread()  # exit now, even if the main process no longer reads


def _frame_reporter(worker_id: int, index: int, results):
    pending = {"frames": 0, "faces": 0, "sent": time.monotonic()}

    def on_frame(faces) -> None:
        pending["frames"] += 1
        pending["faces"] += len(faces.regions)
        now = time.monotonic()
        if now - pending["sent"] >= _PROGRESS_EVERY_S:
            results.put(("frames", worker_id, index, pending["frames"], pending["faces"]))
            pending.update(frames=0, faces=0, sent=now)

    return on_frame
