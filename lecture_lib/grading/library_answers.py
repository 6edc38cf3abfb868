"""Does a student's answer only call the library's own answer? Read from the source, outside
the kernel.

Each check names the library functions that are its question's answer (``Check.library``).
``references`` reads the student's code cells, finds the definition of the answer a check cell
names (and of the student's own functions it uses, transitively), and lists the library
functions among them that it refers to, however they were imported::

    from lecture_lib import attribution          # attribution.saliency(...)
    from lecture_lib.attribution import saliency as s   # s(...)
    getattr(attribution, "saliency")(...)

The kernel reports the calls it saw too (``checks.library_calls``); this reading is the half that
student code cannot switch off. A determined student can still hide a call behind code built
at run time (``exec``, computed names); ``suspicious`` lists such constructs for the instructor.
"""

from __future__ import annotations

import ast

SUSPICIOUS_BUILTINS = {"exec", "eval", "compile", "__import__"}
SUSPICIOUS_ATTRIBUTES = {
    "setprofile",
    "settrace",
    "get_objects",
    "import_module",
    "CDLL",
    "_getframe",
}


def python_source(cell_source: str) -> str:
    """A notebook cell as plain Python (IPython's ``%magics`` and ``!commands`` turned into calls)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(cell_source)
    except Exception:  # without IPython, or a cell it cannot read: take it as it is
        return cell_source


def _trees(sources: list[str]) -> list[ast.Module]:
    trees = []
    for source in sources:
        try:
            trees.append(ast.parse(python_source(source)))
        except SyntaxError:
            continue  # a cell that does not parse defines nothing
    return trees


def _aliases(trees: list[ast.Module]) -> tuple[dict[str, str], list[str]]:
    """``{name: dotted path}`` bound by the imports (and by assignments of an imported name,
    ``A = attribution``, ``f = attribution.saliency``, at any depth), and the modules imported
    with ``*``."""
    aliases, starred = {}, []
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for name in node.names:
                    if name.asname:
                        aliases[name.asname] = name.name
                    else:
                        top = name.name.split(".")[0]
                        aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for name in node.names:
                    if name.name == "*":
                        starred.append(node.module)
                    else:
                        aliases[name.asname or name.name] = f"{node.module}.{name.name}"
    for _ in range(5):  # aliases of aliases, a few levels deep
        for tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    value = _dotted(node.value, aliases)
                    for target in targets:
                        if value and isinstance(target, ast.Name):
                            aliases.setdefault(target.id, value)
    return aliases, starred


def _definitions(trees: list[ast.Module]) -> dict[str, list[ast.AST]]:
    """Every definition of each name (functions, classes, assignments), at any depth: nested
    in a function, under an ``if``, in a ``try``, in a class."""
    found: dict[str, list[ast.AST]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            for name in names:
                found.setdefault(name, []).append(node)
    return found


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` with ``a`` resolved through the imports, or None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in aliases:
        return ".".join([aliases[node.id], *reversed(parts)])
    return None


def references(sources: list[str], answer: str, library: tuple[str, ...] | list[str]) -> list[str]:
    """The functions of ``library`` that the code behind the expression ``answer`` refers to."""
    library = set(library)
    if not library:
        return []
    trees = _trees(sources)
    aliases, starred = _aliases(trees)
    definitions = _definitions(trees)
    try:
        start = ast.parse(answer, mode="eval")
    except SyntaxError:
        return []
    found, seen, todo = set(), set(), [start]
    while todo:
        for node in ast.walk(todo.pop()):
            name = _dotted(node, aliases) if isinstance(node, (ast.Attribute, ast.Name)) else None
            if isinstance(node, ast.Name) and name is None:
                name = next(
                    (f"{m}.{node.id}" for m in starred if f"{m}.{node.id}" in library), None
                )
                if node.id in definitions and node.id not in seen:
                    seen.add(node.id)
                    todo.extend(definitions[node.id])
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                base = _dotted(node.args[0], aliases)
                name = f"{base}.{node.args[1].value}" if base else None
            if name in library:
                found.add(name)
    return sorted(found)


def suspicious(sources: list[str]) -> list[str]:
    """Constructs in the student's code that can hide what it does from the grader's reading."""
    found = set()
    for tree in _trees(sources):
        for node in ast.walk(tree):
            function = node.func if isinstance(node, ast.Call) else None
            if isinstance(function, ast.Name) and function.id in SUSPICIOUS_BUILTINS:
                found.add(function.id)
            elif isinstance(function, ast.Attribute) and function.attr in SUSPICIOUS_ATTRIBUTES:
                found.add(function.attr)
    return sorted(found)
