"""``SandboxedExecute``: nbgrader's execution step, made safe for hostile submissions.

For each submitted notebook (``grade_notebook``):

1. every check cell (an autograded test cell, its source restored from the gradebook) is read
   into its calls, gets fresh secret seeds, and is looked over for answers that only call the
   library (``verdict``, ``library_answers``);
2. the cells run one at a time in a kernel inside a sandbox (``sandbox``, ``kernel``); a check
   cell runs ``collect`` instead of its source and only sends the student's results out;
3. each check cell's outputs are replaced by the verdict reached here: its ✓ lines, or an error
   with the check's message (which is what nbgrader scores);
4. a cell that kills its kernel or does not stop when interrupted costs only itself: grading
   goes on in a fresh kernel, after the cells above it are run again;
5. every cell's outputs are capped (``output_limit``) and keep only plain text and pictures;
6. a submission gets ``submission_timeout`` seconds in all: past it, the cells left are not
   run (the feedback says so) and the points already earned stay;
7. the kernel imports a grading copy of the library without the answers (``grading_copy``),
   and what it sends is taken only as asked (``verdict.gather``); a message the grader cannot
   read costs only its cell, and is named in the feedback and the log.

With ``workers > 1`` the submissions of one ``nbgrader autograde`` run are executed that many
at a time (``Prefetch``); nbgrader still writes the gradebook one submission at a time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import nbformat
from nbgrader.preprocessors import Execute
from traitlets import Bool, Float, Integer

from . import grading_copy, library_answers
from .kernel import SandboxKernel
from .sandbox import GiB, Sandbox, check_bwrap

JUDGE_LOCK = threading.Lock()
"""References are computed one at a time (the checks seed PyTorch's global generator)."""


@dataclass
class Settings:
    """How a notebook is graded (``SandboxedExecute`` fills it from nbgrader_config.py)."""

    timeout: float = 60
    sandbox: bool = True
    memory_limit: int = 3 * GiB
    process_limit: int = 256
    disk_limit: int = 512 * 2**20
    output_limit: int = 2**20
    max_restarts: int = 3
    allow_library_answers: bool = False
    threads: int = 1
    files: dict = field(default_factory=dict)
    submission_timeout: float = 600
    label: str = "this submission"  # who and what, for the log


def is_check_cell(cell) -> bool:
    """An autograded test cell: graded, code, not written by the student."""
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


@dataclass
class CheckPlan:
    """What grading a check cell takes: its calls, their secret seeds, the library answers
    found in the student's code, or why the cell cannot be graded."""

    calls: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    library_use: dict = field(default_factory=dict)
    problem: str | None = None


def plan_checks(nb) -> dict[int, CheckPlan]:
    """A ``CheckPlan`` for each check cell, by cell index."""
    from .. import checks
    from . import verdict

    plans, student = {}, []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if not is_check_cell(cell):
            student.append(cell.source)
            continue
        try:
            calls = verdict.parse_check_cell(cell.source)
        except (ValueError, SyntaxError, TypeError) as error:
            plans[index] = CheckPlan(problem=f"this check cell cannot be graded: {error}")
            continue
        use = {
            k: library_answers.references(
                list(student), call.answer, getattr(checks, call.check).library
            )
            for k, call in enumerate(calls)
        }
        plans[index] = CheckPlan(
            calls, verdict.draw_seeds(calls), {k: v for k, v in use.items() if v}
        )
    return plans


def _error(ename: str, text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=text, traceback=text.splitlines())


def _text(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output(
        "stream", name="stdout", text=text if text.endswith("\n") else text + "\n"
    )


def _fault_note(run, settings: Settings, replaying: bool = False) -> nbformat.NotebookNode:
    when = "When it was run again in a fresh kernel, this" if replaying else "This"
    if run.status == "died":
        what = (
            f"{when} cell stopped its kernel (it exited, crashed, or used more than the "
            f"{settings.memory_limit / GiB:g} GiB of memory a submission may use)."
        )
        name = "KernelDied"
    else:
        what = (
            f"{when} cell ran longer than {settings.timeout:g} s and did not stop when "
            "interrupted, so its kernel was stopped."
        )
        name = "CellDidNotStop"
    return _error(
        name,
        f"{what} Grading went on in a fresh kernel: the cells above were run again, this cell "
        "was left out, and the cells below were graded as usual.",
    )


def _check_outputs(run, plan: CheckPlan, settings: Settings) -> list:
    """A check cell's outputs: what the student's code printed, then the verdict."""
    kept = []
    for output in run.outputs:
        if output.output_type == "stream":
            output.name = "stdout"  # a warning is no failure: only the verdict decides
            kept.append(output)
        elif output.output_type == "display_data":
            kept.append(output)
    if run.status == "timeout":
        kept.append(_text(f"[interrupted: the check ran longer than {settings.timeout:g} s]"))
    if run.fault:
        kept.append(_fault_note(run, settings))
    if plan.problem:
        return [*kept, _error("GradingError", plan.problem)]
    from . import verdict

    observations, refused = verdict.gather(run.observations, plan.calls)
    if run.unreadable and not refused:
        refused = f"{len(run.unreadable)} message(s) from the kernel could not be read."
    if refused:
        return [*kept, _error("GradingError", verdict.GRADING_REFUSED.format(reason=refused))]
    import torch

    with JUDGE_LOCK:
        # The references are computed on the kernel's threads (the library keeps a caller's
        # setting of one thread): the same sums in the same order as the student's kernel.
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, settings.threads))
        try:
            decision = verdict.decide(
                plan.calls, plan.seeds, observations, plan.library_use,
                settings.allow_library_answers,
            )  # fmt: skip
        finally:
            torch.set_num_threads(threads)
    if decision.lines:
        kept.append(_text("\n".join(decision.lines)))
    if not decision.passed:
        kept.append(_error("AssertionError", decision.failure))
    return kept


def library_copy(plans: dict, keep_answers: bool = False) -> grading_copy.Path:
    """The grading copy of the library for a notebook with these check plans."""
    calls = [call for plan in plans.values() for call in plan.calls]
    return grading_copy.build(
        grading_copy.plan([c.check for c in calls], [c.options for c in calls], keep_answers)
    )


def grade_notebook(nb, settings: Settings, log=None) -> nbformat.NotebookNode:
    """Run ``nb`` in a sandboxed kernel and put each check cell's verdict in its outputs."""
    deadline = time.monotonic() + settings.submission_timeout
    plans = plan_checks(nb)
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    with Sandbox(
        memory_limit=settings.memory_limit,
        process_limit=settings.process_limit,
        disk_limit=settings.disk_limit,
        threads=settings.threads,
        files=settings.files,
        enabled=settings.sandbox,
        library=library_copy(plans, settings.allow_library_answers) if settings.sandbox else None,
    ) as sandbox:
        if log is not None:
            where = "a bubblewrap sandbox" if settings.sandbox else "NO sandbox"
            log.info("Running the notebook in %s (%s)", where, sandbox.limits)
        kernel = SandboxKernel(sandbox)
        kernel.start()
        try:
            _run_cells(nb, code, plans, kernel, settings, deadline, log)
        finally:
            kernel.stop()
    return nb


def _out_of_time(settings: Settings) -> str:
    return (
        f"Not run: this submission used up its {settings.submission_timeout:g} s of grading "
        "time (c.SandboxedExecute.submission_timeout); the points earned above stay."
    )


def _run_cells(
    nb, code: list[int], plans: dict, kernel: SandboxKernel, settings: Settings, deadline, log
) -> None:
    replay: list[int] = []  # cells that ran to the end, to run again in a fresh kernel
    faults = 0
    for index in code:
        cell, plan = nb.cells[index], plans.get(index)
        cell.outputs, cell.execution_count = [], None
        if faults > settings.max_restarts:
            note = f"Not run: the kernel failed {faults} times in this submission."
            cell.outputs = [_error("NotGraded", note)] if plan else [_text(f"[{note}]")]
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            note = _out_of_time(settings)
            cell.outputs = [_error("NotGraded", note)] if plan else [_text(f"[{note}]")]
            continue
        try:
            faults = _run_cell(nb, index, plan, kernel, settings, replay, faults, deadline, log)
        except Exception as error:  # what a kernel sent broke the grader's reading: this cell only
            text = (
                f"The grader could not handle what this cell's kernel sent "
                f"({type(error).__name__}: {str(error)[:300]}); the cell earns nothing."
            )
            cell.outputs = [_error("GradingError", text)]
            if log is not None:
                log.error("%s, cell %d: %s", settings.label, index, text)


def _run_cell(
    nb, index, plan, kernel, settings: Settings, replay, faults: int, deadline, log=None
) -> int:
    """Run one cell (its check when it is a check cell); returns the count of faults."""
    cell, left = nb.cells[index], deadline - time.monotonic()
    if plan is not None and plan.problem is None:
        from . import verdict

        source = verdict.kernel_code(plan.calls, plan.seeds)
    elif plan is not None:
        cell.outputs = _check_outputs(_empty_run(), plan, settings)
        return faults
    else:
        source = cell.source
    if not source.strip():
        return faults
    budget = left < settings.timeout
    run = kernel.run(source, min(settings.timeout, left), settings.output_limit)
    cell.outputs, cell.execution_count = run.outputs, run.execution_count
    unreadable = run.unreadable + [str(m) for m in run.observations if isinstance(m, Exception)]
    if unreadable and log is not None:
        log.warning(
            "%s, cell %d: %d message(s) from the kernel could not be read (%s); they cost "
            "this cell only.", settings.label, index, len(unreadable), unreadable[0][:200],
        )  # fmt: skip
    if budget and run.status == "timeout":
        cell.outputs.append(
            _text(
                f"[interrupted: this submission used up its {settings.submission_timeout:g} s of grading time]"
            )
        )
    if plan is not None:
        cell.outputs = _check_outputs(run, plan, settings)
    elif run.status == "timeout":
        if not budget:
            cell.outputs.append(
                _text(f"[interrupted: the cell ran longer than {settings.timeout:g} s]")
            )
    elif run.fault:
        cell.outputs.append(_fault_note(run, settings))
    elif run.status in ("ok", "error"):
        replay.append(index)
    if run.unreadable and plan is None:
        cell.outputs.append(
            _text(
                f"[grading: {len(run.unreadable)} message(s) this cell's kernel sent could "
                f"not be read and were left out: {run.unreadable[0]}]"
            )
        )
    if run.fault:
        faults = _fresh_kernel(nb, kernel, replay, settings, faults + 1, deadline)
    return faults


def _empty_run():
    from .kernel import CellRun

    return CellRun()


def _fresh_kernel(
    nb, kernel: SandboxKernel, replay: list[int], settings: Settings, faults: int, deadline
) -> int:
    """Start a fresh kernel and run the cells of ``replay`` again; a cell that fails now is
    left out (and noted), and the kernel started once more. Returns the count of faults.
    The replay stops where the submission's grading time ends."""
    while faults <= settings.max_restarts:
        kernel.restart()
        for index in list(replay):
            left = deadline - time.monotonic()
            if left <= 0:
                return faults
            timeout = min(settings.timeout, left)
            run = kernel.run(nb.cells[index].source, timeout, settings.output_limit)
            if run.fault or run.status == "timeout":
                replay.remove(index)
                nb.cells[index].outputs.append(_fault_note(run, settings, replaying=True))
                faults += run.fault
                if run.fault:
                    break
        else:
            return faults
    return faults


# --- nbgrader --------------------------------------------------------------------------------


def fingerprint(nb) -> str:
    """The cells that decide a grade (types, sources, nbgrader metadata), hashed."""
    cells = [
        (c.cell_type, c.source, json.dumps(c.metadata.get("nbgrader", {}), sort_keys=True))
        for c in nb.cells
    ]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


class SandboxedExecute(Execute):
    """nbgrader's ``Execute``, with the kernel in a sandbox and the verdict outside it.

    Settings (``c.SandboxedExecute.<name>`` in nbgrader_config.py) are the traits below; the
    time limit per cell is nbgrader's ``c.ExecutePreprocessor.timeout``.
    """

    sandbox = Bool(True, help="Run each submission's kernel in a bubblewrap sandbox.").tag(
        config=True
    )
    workers = Integer(1, help="Submissions executed at a time by one autograde run.").tag(
        config=True
    )
    memory_limit = Integer(3 * GiB, help="Bytes of memory a submission's kernel may use.").tag(
        config=True
    )
    process_limit = Integer(256, help="Processes and threads a submission may run.").tag(
        config=True
    )
    disk_limit = Integer(
        512 * 2**20, help="Bytes a submission may write (home and /tmp each)."
    ).tag(config=True)
    output_limit = Integer(2**20, help="Bytes of output kept per cell.").tag(config=True)
    max_restarts = Integer(
        3, help="Fresh kernels a submission may need before the rest is not run."
    ).tag(config=True)
    threads = Integer(1, help="PyTorch/OpenMP threads in a submission's kernel.").tag(config=True)
    submission_timeout = Float(
        600, help="Seconds of grading time per submission; the cells past it are not run."
    ).tag(config=True)
    allow_library_answers = Bool(
        False, help="Give points to an answer that only calls the library's own answer."
    ).tag(config=True)

    _checked_bwrap = False

    def settings(self, resources) -> Settings:
        return Settings(
            timeout=float(self.timeout or 60),
            sandbox=self.sandbox,
            memory_limit=self.memory_limit,
            process_limit=self.process_limit,
            disk_limit=self.disk_limit,
            output_limit=self.output_limit,
            max_restarts=self.max_restarts,
            allow_library_answers=self.allow_library_answers,
            threads=self.threads,
            files=self._assignment_files(resources),
            submission_timeout=self.submission_timeout,
            label="{student}'s {assignment}".format(**resources.get("nbgrader", {})),
        )

    def _converter(self):
        exporter = getattr(self, "parent", None)
        return getattr(exporter, "parent", None)

    def _assignment_files(self, resources) -> dict:
        """The assignment's supporting files (not notebooks), to copy into the kernel's home."""
        converter = self._converter()
        coursedir = getattr(converter, "coursedir", None)
        if coursedir is None:
            return {}
        source = coursedir.format_path(
            coursedir.source_directory, ".", resources["nbgrader"]["assignment"]
        )
        files = {}
        for folder, _, names in os.walk(source):
            for name in names:
                path = os.path.join(folder, name)
                if (
                    not name.endswith(".ipynb")
                    and os.path.isfile(path)
                    and not os.path.islink(path)
                ):
                    files[path] = os.path.relpath(path, source).replace(os.sep, "/")
        return files

    def preprocess(self, nb, resources):
        if self.sandbox and not SandboxedExecute._checked_bwrap:
            check_bwrap()
            SandboxedExecute._checked_bwrap = True
        if not self.sandbox:
            self.log.warning("Grading WITHOUT a sandbox (c.SandboxedExecute.sandbox = False).")
        ids = resources["nbgrader"]
        key = (ids["assignment"], ids["student"], ids["notebook"])
        prefetch = Prefetch.of(self) if self.workers > 1 else None
        graded = prefetch.take(key, nb) if prefetch else None
        if graded is None:
            graded = grade_notebook(nb, self.settings(resources), self.log)
        self._log_suspicious(graded, ids)
        return graded, resources

    def _log_suspicious(self, nb, ids) -> None:
        student = [c.source for c in nb.cells if c.cell_type == "code" and not is_check_cell(c)]
        found = library_answers.suspicious(student)
        if found:
            self.log.warning(
                "Submission of %s for %s uses %s: code that can hide what it does from the "
                "grader's reading; worth a look in the Formgrader.",
                ids["student"], ids["assignment"], ", ".join(found),
            )  # fmt: skip


class Prefetch:
    """The submissions of one autograde run, executed ``workers`` at a time ahead of nbgrader's
    own loop, which then takes each result in turn (and grades inline what it cannot take)."""

    _runs: dict[int, Prefetch] = {}

    def __init__(self, execute: SandboxedExecute) -> None:
        converter = execute._converter()
        self.pool = ThreadPoolExecutor(max_workers=execute.workers, thread_name_prefix="grading")
        self.futures: dict[tuple, Future] = {}
        if converter is None or not hasattr(converter, "assignments"):
            return
        execute.log.info("Executing submissions %d at a time", execute.workers)
        for folder in sorted(converter.assignments):
            for path in sorted(converter.assignments[folder]):
                resources = _submission_resources(converter, path)
                if resources is None:
                    continue
                ids = resources["nbgrader"]
                key = (ids["assignment"], ids["student"], ids["notebook"])
                if not self._wanted(converter, ids):
                    continue
                self.futures[key] = self.pool.submit(
                    self._grade, execute, converter, path, resources
                )

    @classmethod
    def of(cls, execute: SandboxedExecute) -> Prefetch:
        converter = execute._converter()
        key = id(converter)
        if key not in cls._runs:
            cls._runs[key] = cls(execute)
        return cls._runs[key]

    @staticmethod
    def _wanted(converter, ids) -> bool:
        """nbgrader regrades a submission only with --force or when it is newer."""
        if getattr(converter, "force", True):
            return True
        dest = converter._format_dest(ids["assignment"], ids["student"])
        return not os.path.exists(os.path.join(dest, ids["notebook"] + ".ipynb"))

    @staticmethod
    def _grade(execute, converter, path, resources):
        """What nbgrader's sanitize step makes of ``path``, then graded."""
        nb, resources = _read_and_sanitize(converter, path, copy.deepcopy(resources))
        return fingerprint(nb), grade_notebook(nb, execute.settings(resources), execute.log)

    def take(self, key, nb):
        future = self.futures.pop(key, None)
        if not self.futures:
            self.pool.shutdown(wait=False)
            Prefetch._runs = {k: v for k, v in Prefetch._runs.items() if v is not self}
        if future is None:
            return None
        try:
            printed, graded = future.result()
        except Exception:
            return None  # graded again inline, where the error is reported
        return graded if printed == fingerprint(nb) else None


def _submission_resources(converter, path) -> dict | None:
    """nbgrader's resources of a submitted notebook: its student, assignment and notebook."""
    coursedir = converter.coursedir
    folder = coursedir.format_path(
        coursedir.submitted_directory, "(?P<student>.*)", "(?P<assignment>.*)", escape=True
    )
    match = re.match(re.escape(os.path.sep).join([folder, "(?P<notebook>.*).ipynb"]), path)
    if match is None:
        return None
    ids = match.groupdict()
    return {
        "unique_key": ids["notebook"],
        "output_files_dir": f"{ids['notebook']}_files",
        "nbgrader": {**ids, "db_url": coursedir.db_url},
    }


def _read_and_sanitize(converter, path, resources):
    """Read ``path`` as nbgrader's sanitize step does and apply its preprocessors."""
    reader = converter.exporter_class(config=converter.config)
    output, resources = reader.from_filename(path, resources=resources)
    nb = nbformat.reads(output, as_version=4)
    for preprocessor_class in converter.sanitize_preprocessors:
        nb, resources = preprocessor_class(config=converter.config)(nb, resources)
    return nb, resources
