"""How long each lecture notebook takes to run, on an idle machine and with one core kept busy.

    python benchmarks/bench_lectures.py                       # every lecture: idle, busy, busy pinned
    python benchmarks/bench_lectures.py lectures/03_saliency.ipynb --modes busy
    python benchmarks/bench_lectures.py --compare /path/to/other/checkout   # before / after

A laptop in a lecture is rarely idle (a browser, a video call). "busy" starts a helper process
that spins on one core for the whole run (the operating system may move it between cores);
"pinned" keeps it on the last core; the helper is stopped after each notebook. Each notebook
runs top to bottom in a fresh kernel of this Python (nbclient), with ``lecture_lib`` imported
from this checkout, or from the ``--compare`` checkout for a second column measured in the same
run. The target is at most 30 s per notebook, busy or not. Print ``--cells 3`` to see the three
slowest cells of each run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 30.0
MODES = ("idle", "busy", "pinned")


def spin() -> None:
    """The helper: one core kept busy until it is stopped."""
    while True:
        pass


@contextmanager
def load(mode: str):
    """Nothing for "idle"; a spinning helper process for "busy" (pinned to the last core for
    "pinned"), stopped when the block ends."""
    if mode == "idle":
        yield
        return
    helper = multiprocessing.get_context("spawn").Process(target=spin, daemon=True)
    helper.start()
    try:
        if mode == "pinned":
            os.sched_setaffinity(helper.pid, {max(os.sched_getaffinity(0))})
        yield
    finally:
        helper.terminate()
        helper.join()


def run_notebook(path: Path, library: Path, timeout: int) -> tuple[float, list[tuple[float, str]]]:
    """Seconds to run ``path`` top to bottom, and each code cell's seconds and first line."""
    notebook = nbformat.read(path, as_version=4)
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(library), str(ROOT)]))
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=True,
    )
    start = time.perf_counter()
    client.execute(env=environment)
    seconds = time.perf_counter() - start
    cells = []
    for cell in notebook.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in timing:
            began = _timestamp(timing["iopub.execute_input"])
            ended = _timestamp(timing["shell.execute_reply"])
            first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            cells.append((ended - began, first[:60]))
    return seconds, cells


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: lectures/*.ipynb")
    parser.add_argument("--modes", default=",".join(MODES), help="idle,busy,pinned")
    parser.add_argument("--compare", type=Path, help="another checkout: a second column")
    parser.add_argument("--cells", type=int, default=0, help="print the N slowest cells")
    parser.add_argument("--timeout", type=int, default=600, help="per cell, seconds")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "lectures").glob("*.ipynb"))
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    if "pinned" in modes and not hasattr(os, "sched_setaffinity"):
        print("note: this system cannot pin a process to a core; 'pinned' is left out")
        modes.remove("pinned")
    libraries = {"this checkout": ROOT}
    if args.compare:
        libraries = {"compare": args.compare.resolve(), **libraries}

    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}"
    )
    for name, library in libraries.items():
        print(f"{name}: lecture_lib from {library}")
    columns = [
        f"{mode} {name}" if len(libraries) > 1 else mode for mode in modes for name in libraries
    ]
    header = f"{'notebook':38s}" + "".join(f"{c:>24s}" for c in columns)
    rows = []
    for notebook in notebooks:
        times = []
        for mode in modes:
            for name, library in libraries.items():
                with load(mode):
                    seconds, cells = run_notebook(notebook, library, args.timeout)
                times.append(seconds)
                print(f"  {notebook.name} {mode} ({name}): {seconds:.1f} s", flush=True)
                for cell_seconds, first in sorted(cells, reverse=True)[: args.cells]:
                    print(f"      {cell_seconds:6.1f} s  {first}")
        rows.append((notebook.name, times))
    print(f"\nseconds per notebook (goal: at most {LIMIT_S:.0f} s each)")
    print(header)
    for name, times in rows:
        cells = "".join(f"{t:>22.1f}{' ' if t <= LIMIT_S else ' !'}".rjust(24) for t in times)
        print(f"{name:38s}{cells}")


if __name__ == "__main__":
    main()
