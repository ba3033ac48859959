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
from typing import Any, Iterator

from styleface_cli.config import AnonymizeConfig
from styleface_cli.errors import ExitCode, Stopped, StylefaceError
from styleface_cli.inputs import Job
from styleface_cli.report import RunInfo, new_record

_PROGRESS_EVERY_S = 0.25  # frame counts are sent to the main process at most this often


def run_in_workers(todo: list[tuple[Job, str | None]], *, cfg: AnonymizeConfig, info: RunInfo, overwrite: bool,
                   workers: int, progress=None) -> Iterator[dict[str, Any]]:
    """Records of ``todo`` from ``workers`` processes, in completion order."""
    from styleface_cli.api import for_worker, threads_per_worker

    context = multiprocessing.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    worker_cfg = for_worker(cfg, workers)
    threads = threads_per_worker(workers)
    report_frames = progress is not None
    processes: dict[int, multiprocessing.Process] = {}
    in_flight: dict[int, int] = {}  # worker id -> index in todo
    next_id = 0

    def start_worker() -> None:
        nonlocal next_id
        if next_id >= 2 * workers + len(todo):  # workers die as they start: say so rather than loop
            raise StylefaceError(f"the worker processes keep dying ({next_id} started); run with --jobs 1 to see why")
        process = context.Process(target=_worker_main, name=f"styleface-worker-{next_id}", daemon=True,
                                  args=(next_id, worker_cfg, info, overwrite, threads, report_frames, tasks, results))
        process.start()
        processes[next_id] = process
        next_id += 1

    for _ in range(min(workers, len(todo))):
        start_worker()
    queued = 0
    done = 0
    try:
        while queued < len(todo) and queued < 2 * len(processes):  # at most two jobs queued per worker
            tasks.put((queued, *todo[queued]))
            queued += 1
        jobs = [job for job, _ in todo]
        while done < len(todo):
            try:
                message = results.get(timeout=0.5)
            except queue.Empty:
                for record in _check_workers(processes, in_flight, todo, info, start_worker):
                    done += 1
                    yield record
                continue
            kind, worker_id = message[0], message[1]
            if kind == "ready":
                continue
            if kind == "failed":  # the models could not be loaded: the whole run fails
                raise message[2]
            if kind == "want":
                index = message[2]
                in_flight[worker_id] = index
                if progress is not None:
                    progress.started(jobs[index])
                continue
            if kind == "frames":
                if progress is not None:
                    progress.advanced(jobs[message[2]], message[3], message[4])
                continue
            if kind == "done":
                index, record = message[2], message[3]
                in_flight.pop(worker_id, None)
                done += 1
                if queued < len(todo):
                    tasks.put((queued, *todo[queued]))
                    queued += 1
                if progress is not None:
                    progress.finished(jobs[index], record)
                yield record
    finally:
        _stop(processes, tasks)


def _check_workers(processes, in_flight, todo, info, start_worker) -> Iterator[dict[str, Any]]:
    """Records for the inputs of workers that died on their own; replacements for them."""
    for worker_id, process in list(processes.items()):
        if process.is_alive():
            continue
        processes.pop(worker_id)
        index = in_flight.pop(worker_id, None)
        if index is not None:
            job, reason = todo[index]
            yield new_record(job, info, status="error", reason=reason, exit_code=int(ExitCode.FAILURE),
                             error=f"{job.source}: the worker process died (exit code {process.exitcode})")
        start_worker()


def _stop(processes: dict[int, multiprocessing.Process], tasks) -> None:
    """Stop every worker: the input in flight is abandoned through its clean-ups."""
    for process in processes.values():
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes.values():
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
        results.put(("ready", worker_id))
        while True:
            task = tasks.get()
            if task is None:
                return
            index, job, reason = task
            results.put(("want", worker_id, index))
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
