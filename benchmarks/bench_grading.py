"""How fast a class is autograded: submissions per minute with 1 and with 2 workers.

A temporary copy of the course; ``--students`` simulated students of one assignment (honest
work: full solutions, and every fifth one with a wrong answer); ``nbgrader autograde`` with
``--SandboxedExecute.workers=1`` and ``=2``, in the sandbox, as an instructor runs it. Then one
submission alone, and the plain execution of the same notebook without nbgrader or sandbox
(``jupyter nbconvert --execute``) as the baseline measured in the same run.

    python benchmarks/bench_grading.py                  # 20 students of 04_deconvnet
    python benchmarks/bench_grading.py --students 8 --assignment 02_saturation
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def run(course: Path, *args: str) -> float:
    """Seconds that ``args`` took in the course folder (fails loudly)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=course,
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def wrong(nb):
    """The first solution cell's return statement negated: an honest but wrong answer."""
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution") and cell.cell_type == "code":
            if "return " in cell.source:
                cell.source = cell.source.replace("return ", "return -1 * ", 1)
                return nb
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="04_deconvnet")
    parser.add_argument("--students", type=int, default=20)
    args = parser.parse_args()
    a = args.assignment

    with tempfile.TemporaryDirectory() as folder:
        course = Path(folder)
        shutil.copy(ROOT / "nbgrader_config.py", course)
        shutil.copytree(ROOT / "solutions", course / "solutions")
        shutil.copytree(ROOT / "exercises", course / "exercises")
        run(course, "nbgrader", "generate_assignment", a, "--force")
        solution = nbformat.read(ROOT / "solutions" / a / f"{a}.ipynb", as_version=4)
        for k in range(args.students):
            nb = wrong(copy.deepcopy(solution)) if k % 5 == 4 else solution
            path = course / "grading" / "submitted" / f"student{k:03d}" / a / f"{a}.ipynb"
            path.parent.mkdir(parents=True)
            nbformat.write(nb, path)

        plain = run(
            course, "jupyter", "nbconvert", "--to", "notebook", "--execute", "--stdout",
            str(course / "solutions" / a / f"{a}.ipynb"),
        )  # fmt: skip
        one = run(
            course, "nbgrader", "autograde", a, "--create", "--force", "--student=student000",
            "--SandboxedExecute.workers=1",
        )  # fmt: skip
        print(f"{a}, {args.students} students, {os.cpu_count()} CPU cores")
        print(f"  plain execution of the notebook (nbconvert, no sandbox): {plain:6.1f} s")
        print(f"  one submission through nbgrader autograde, sandboxed:   {one:6.1f} s")
        rates = {}
        for workers in (1, 2):
            seconds = run(
                course, "nbgrader", "autograde", a, "--create", "--force",
                f"--SandboxedExecute.workers={workers}",
            )  # fmt: skip
            rates[workers] = args.students / seconds * 60
            print(
                f"  {workers} worker{'s' if workers > 1 else ' '}: {seconds:6.1f} s for "
                f"{args.students} = {rates[workers]:5.1f} submissions per minute"
            )
        best = max(rates, key=rates.get)
        print(
            f"  a class of 300: {300 / rates[best]:.0f} minutes with {best} worker(s) "
            f"(300 / {rates[best]:.1f} per minute); {300 / rates[1]:.0f} with 1"
        )


if __name__ == "__main__":
    main()
