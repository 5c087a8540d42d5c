"""Run benchmark workers, each in a fresh process, and collect their results.

On Linux the runner imports the heavy libraries once and forks a child per worker (a fresh process that
skips about 10 s of imports); elsewhere each worker is a new ``python -m benchmarks.<module>`` process. The
runner itself never touches CUDA before forking, so a forked child may initialise it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {"HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "TOKENIZERS_PARALLELISM": "false"}
Job = tuple[str, list[str]]  # (module, its command-line arguments)


def _entry_points() -> dict[str, Callable[[list[str]], dict]]:
    from . import bench_logps, bench_step, measure

    return {"bench_step": bench_step.work, "bench_logps": bench_logps.work, "measure": measure.work}


def use_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def prepare_parent() -> None:
    """Set the workers' environment; when forking, import what every worker needs once, here."""
    os.environ.update(ENV)
    if use_fork():
        from .bench_step import _import_everything

        _import_everything()


def _describe(job: Job) -> str:
    return f"python -m benchmarks.{job[0]} {' '.join(job[1])}"


def _child(job: Job, conn, log_path: str) -> None:
    """In the forked child: run the worker with its output in a log file, send (status, payload) back."""
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        conn.send(("ok", _entry_points()[job[0]](job[1])))
    except BaseException:  # the parent reports it with the job that failed
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _log_tail(path: str) -> str:
    return Path(path).read_text(errors="replace")[-3000:] if Path(path).exists() else ""


def _run_forked(jobs: list[Job], parallel: int) -> list[dict]:
    context = multiprocessing.get_context("fork")
    results: list[dict | None] = [None] * len(jobs)
    pending, running = list(enumerate(jobs)), {}
    with tempfile.TemporaryDirectory() as logs:
        while pending or running:
            while pending and len(running) < parallel:
                index, job = pending.pop(0)
                receive, send = context.Pipe(duplex=False)
                log_path = f"{logs}/{index}.log"
                process = context.Process(target=_child, args=(job, send, log_path), daemon=True)
                process.start()
                send.close()
                running[receive] = (index, job, process, log_path)
            for conn in wait(list(running)):
                index, job, process, log_path = running.pop(conn)
                try:
                    status, payload = conn.recv()
                except EOFError:
                    status, payload = "error", "the worker died without a result (out of memory?)"
                process.join()
                if status != "ok":
                    raise RuntimeError(
                        f"{_describe(job)} failed (exit {process.exitcode}):\n{payload}\n"
                        f"{_log_tail(log_path)}"
                    )
                results[index] = payload
    return results


def _run_subprocess(job: Job) -> dict:
    env = dict(os.environ, **ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", f"benchmarks.{job[0]}", *job[1]]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{_describe(job)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("BENCH_RESULT "))


def run_workers(jobs: list[Job], parallel: int = 1) -> list[dict]:
    """Each job's result, in order; at most ``parallel`` run at once. A failed job raises with its log."""
    if use_fork():
        return _run_forked(jobs, parallel)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(_run_subprocess, jobs))
