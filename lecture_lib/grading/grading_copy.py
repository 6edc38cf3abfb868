"""The library as a submission's kernel sees it while grading: without the answers.

A forged result needs the right numbers. Inside the sandbox the kernel gets a *grading copy* of
``lecture_lib`` (bound read-only where the library lies, over any other copy) in which these
functions raise ``NotAvailableWhileGrading`` instead of computing:

- the library's own answers to the assignment's questions (each check's ``library``);
- what the checks' judge halves compute their references with (the library functions they
  call, and the checks' own code that only a judge half uses).

What the run halves of the assignment's checks need (their cases, the model, a method handed to
the student's answer, such as SmoothGrad's base method) stays; a library answer among them
keeps a call record (``collect.LIBRARY_CALLS``) that sees calls from every thread.

``plan(checks_called, options)`` says which functions go and which keep a record; ``build``
writes the copy (Python sources only, rewritten from their syntax trees: no bytecode, no
docstrings, no comments) once per plan.
"""

from __future__ import annotations

import ast
import atexit
import functools
import importlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "lecture_lib"
ROOT = Path(__file__).resolve().parent.parent
"""The library's folder (``lecture_lib/``)."""

_LOCK = threading.Lock()
_BUILT: dict[tuple, Path] = {}
_WORK: Path | None = None


class NotAvailableWhileGrading(RuntimeError):
    """Raised by a library function that is an answer (or a reference) while grading."""


# --- the library's functions and who uses whom ---------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    """``{module name: (file, syntax tree)}`` of every module of the library."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        found[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return found


def _resolve(module: str, level: int, name: str | None, is_package: bool) -> str:
    """The absolute module of ``from <level dots><name> import ...`` written in ``module``."""
    if not level:
        return name or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, name] if name else base)


@dataclass
class Graph:
    """Top-level definitions of the library and the library names each one refers to."""

    defined: dict[str, ast.AST]  # "lecture_lib.attribution.saliency" -> its def node
    refers: dict[str, set[str]]  # dotted name -> dotted names it uses
    bare: dict[str, set[str]]  # dotted name -> modules it uses as a value (getattr(mod, name))
    modules: set[str]
    decorators: set[str]  # dotted names that decorate a definition: they run at import


@functools.lru_cache(maxsize=1)
def graph() -> Graph:
    """The library's graph, read once per process (the library does not change while grading)."""
    sources = _sources()
    modules = set(sources)
    defined: dict[str, ast.AST] = {}
    for module, (_, tree) in sources.items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined[f"{module}.{node.name}"] = node
    refers: dict[str, set[str]] = {}
    bare: dict[str, set[str]] = {}
    decorators: set[str] = set()
    for module, (path, tree) in sources.items():
        names: dict[str, str] = {}  # local name -> dotted library name (module or function)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(module, node.level, node.module, path.name == "__init__.py")
                for alias in node.names:
                    target = f"{base}.{alias.name}" if base else alias.name
                    if target.split(".")[0] == PACKAGE:
                        names[alias.asname or alias.name] = target
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE and alias.asname:
                        names[alias.asname] = alias.name
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.setdefault(node.name, f"{module}.{node.name}")
        for node in ast.walk(tree):
            for decorator in getattr(node, "decorator_list", ()):
                decorators |= _names_in(decorator, names, modules)
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            me = f"{module}.{node.name}"
            used, values = set(), set()
            parents = {
                id(child): parent
                for parent in ast.walk(node)
                for child in ast.iter_child_nodes(parent)
            }
            for sub in ast.walk(node):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                    base = names.get(sub.value.id)
                    if base in modules:
                        used.add(f"{base}.{sub.attr}")
                elif isinstance(sub, ast.Name) and sub.id in names:
                    target = names[sub.id]
                    if target in modules:
                        if not isinstance(parents.get(id(sub)), ast.Attribute):
                            values.add(target)
                    else:
                        used.add(target)
            refers[me], bare[me] = used - {me}, values
    return Graph(defined, refers, bare, modules, decorators)


def _names_in(node: ast.AST, names: dict[str, str], modules: set[str]) -> set[str]:
    """The library functions (dotted) that the expression ``node`` names."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            if names.get(sub.value.id) in modules:
                found.add(f"{names[sub.value.id]}.{sub.attr}")
        elif isinstance(sub, ast.Name) and sub.id in names and names[sub.id] not in modules:
            found.add(names[sub.id])
    return found


def _reach(g: Graph, roots, within: set[str] | None = None) -> set[str]:
    """Every definition reachable from ``roots`` (only inside the modules ``within`` if given)."""
    seen, todo = set(), [r for r in roots if r in g.defined]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for used in g.refers.get(name, ()):
            if used in g.defined and (within is None or used.rpartition(".")[0] in within):
                todo.append(used)
    return seen


@dataclass(frozen=True)
class Plan:
    """What the grading copy lacks (``absent``) and what keeps a call record (``recorded``)."""

    absent: frozenset  # dotted names where defined
    recorded: frozenset  # (dotted name where defined, public name that Check.library lists)


def _defined_as(name: str) -> str:
    """Where the library function ``name`` (a public dotted name) is defined."""
    module, _, attribute = name.rpartition(".")
    try:
        value = getattr(importlib.import_module(module), attribute)
        return f"{value.__module__}.{value.__qualname__}"
    except (ImportError, AttributeError):
        return name


def _check_parts(checks_module) -> dict[str, tuple[str, str, tuple, dict]]:
    """``{check: (run's dotted name, judge's dotted name, library, where each is defined)}``."""
    found = {}
    for name, value in vars(checks_module).items():
        if type(value).__name__ == "Check":
            run, judge = value.run, value.judge
            found[name] = (
                f"{run.__module__}.{run.__name__}",
                f"{judge.__module__}.{judge.__name__}",
                tuple(_defined_as(n) for n in value.library),
                {_defined_as(n): n for n in value.library},
            )
    return found


def plan(
    checks_called: list[str], options: list[dict] | None = None, keep_answers: bool = False
) -> Plan:
    """The plan for a notebook whose check cells call ``checks_called`` with ``options``;
    ``keep_answers`` (``allow_library_answers``) leaves out only the judges' own code."""
    from .. import checks

    g = graph()
    parts = _check_parts(checks)
    runs = [parts[c][0] for c in checks_called if c in parts]
    judges = [parts[c][1] for c in checks_called if c in parts]
    check_modules = {m for m in g.modules if m.split(".")[:2] == [PACKAGE, "checks"]}
    all_runs = [p[0] for p in parts.values()]
    all_judges = [p[1] for p in parts.values()]
    # The checks' own code that only a judge half uses (of any check): absent.
    judge_code = _reach(g, all_judges, check_modules) - _reach(g, all_runs, check_modules)
    # What the assignment's judges compute with, and the answers to its questions.
    wanted = {name for c in checks_called if c in parts for name in parts[c][2]}
    for name in _reach(g, judges):
        if name.rpartition(".")[0] in check_modules:
            wanted |= {
                u for u in g.refers.get(name, ()) if u.rpartition(".")[0] not in check_modules
            }
    wanted |= {n for c in parts for n in parts[c][2] if n.rpartition(".")[0] in check_modules}
    # What the assignment's run halves need, also a method named by an option (getattr).
    needed = _reach(g, runs)
    values = {v for o in options or [] for v in o.values() if isinstance(v, str)}
    handed = {
        f"{module}.{value}"
        for name in needed
        for module in g.bare.get(name, ())
        for value in values
        if f"{module}.{value}" in g.defined
    }
    needed |= _reach(g, handed)
    # A decorator runs when its module is imported: it stays, or nothing of that module works.
    absent = (judge_code if keep_answers else wanted | judge_code) - needed - g.decorators
    public = {d: n for c in checks_called if c in parts for d, n in parts[c][3].items()}
    recorded = {(d, public[d]) for d in set(public) & needed}  # recorded by its public name
    return Plan(frozenset(n for n in absent if n in g.defined), frozenset(recorded))


# --- writing the copy ---------------------------------------------------------------------------


def _message(name: str) -> str:
    short = name.removeprefix(f"{PACKAGE}.")
    return (
        f"{short} is not available while grading: it is the library's own answer to a question "
        "of this assignment, or what the grader compares answers with. Write the computation "
        "yourself."
    )


def _rewrite(module: str, tree: ast.Module, p: Plan) -> ast.Module:
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        name = f"{module}.{node.name}"
        if name in p.absent:
            error = f"{PACKAGE}.grading.grading_copy"
            node.decorator_list = []
            node.body = ast.parse(
                f"raise __import__({error!r}, fromlist=['x']).NotAvailableWhileGrading("
                f"{_message(name)!r})"
            ).body
        elif name in dict(p.recorded):
            record = ast.parse(
                f"__import__({PACKAGE + '.grading.collect'!r}, fromlist=['x'])"
                f".LIBRARY_CALLS.append({dict(p.recorded)[name]!r})"
            ).body
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            node.body = record + body
    for node in ast.walk(tree):  # no docstrings: nothing of the sources but what runs
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and isinstance(body, list)
            and len(body) > 1
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:]
    return ast.fix_missing_locations(tree)


def _work_dir() -> Path:
    global _WORK
    if _WORK is None:
        _WORK = Path(tempfile.mkdtemp(prefix="lecture-grading-library-"))
        _WORK.chmod(0o755)
        atexit.register(shutil.rmtree, _WORK, True)
    return _WORK


def build(p: Plan) -> Path:
    """The grading copy's ``lecture_lib`` folder for plan ``p`` (built once per process)."""
    key = (p.absent, p.recorded)
    with _LOCK:
        if key in _BUILT and _BUILT[key].is_dir():
            return _BUILT[key]
        target = Path(tempfile.mkdtemp(prefix="copy-", dir=_work_dir())) / PACKAGE
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.py")
        shutil.copytree(ROOT, target, ignore=ignore)
        for module, (path, tree) in _sources().items():
            out = target / path.relative_to(ROOT)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(ast.unparse(_rewrite(module, tree, p)) + "\n", encoding="utf-8")
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        _BUILT[key] = target
        return target
