"""The stored outputs hold on any processor: the notebooks whose numbers come from long float
computations (class model ascents, feature visualization, fooling loops), re-executed on
PyTorch's plain code path (``ATEN_CPU_CAPABILITY=default``: no vector unit, so float32 sums
round differently from AVX2 and AVX-512) with one thread, print the text that is stored. nbval (the same ``pytest``) checks them with the processor's own vector unit and
threads; ``lecture_lib.precision`` says why both agree.
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = [
    "lectures/03_saliency.ipynb",
    "lectures/08_fooling_and_features.ipynb",
    "solutions/03_saliency/03_saliency.ipynb",
]
PLAIN = {
    "ATEN_CPU_CAPABILITY": "default",  # no AVX2 / AVX-512 kernels in ATen
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN's convolutions without AVX either
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    """nbval's sanitizers for this course (``tests/nbval_sanitize.cfg``)."""
    text = (ROOT / "tests" / "nbval_sanitize.cfg").read_text()
    regexes = re.findall(r"^regex: (.*)$", text, flags=re.M)
    replaces = re.findall(r"^replace: (.*)$", text, flags=re.M)
    return [(re.compile(r), s) for r, s in zip(regexes, replaces, strict=True)]


def _texts(notebook) -> list[tuple[str, str]]:
    """``(source, text)`` of each code cell that nbval compares: its printed and displayed text,
    sanitized as nbval does (pictures and widgets are left to nbval and the browser test)."""
    sanitizers = _sanitizers()
    found = []
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or {"nbval-ignore-output", "nbval-skip"} & set(tags):
            continue
        parts = []
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                data = output.get("data", {})
                parts.append(data.get("text/markdown", "") or data.get("text/plain", ""))
            elif output.output_type == "error":
                parts.append(f"{output.ename}: {output.evalue}")
        text = "".join(parts)
        for pattern, replace in sanitizers:
            text = pattern.sub(replace, text)
        found.append((cell.source, text))
    return found


def _execute(path: str):
    """The notebook at ``path`` executed in a kernel on the plain code path with one thread."""
    run = nbformat.read(ROOT / path, as_version=4)
    env = {**os.environ, **PLAIN, "PYTHONPATH": str(ROOT)}
    client = NotebookClient(
        run,
        timeout=600,
        kernel_name="python3",
        allow_errors=True,  # a check cell that raises is compared like any output
        resources={"metadata": {"path": str((ROOT / path).parent)}},
    )
    client.execute(env=env)
    return run


@pytest.fixture(scope="module")
def executed():
    """Every notebook of ``NOTEBOOKS`` executed, two at a time: each kernel computes on one
    thread, so two of them keep a 2-core machine busy."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(NOTEBOOKS, pool.map(_execute, NOTEBOOKS), strict=True))


@pytest.mark.parametrize(
    "path", NOTEBOOKS, ids=[p.split(".")[0].replace("/", "-") for p in NOTEBOOKS]
)
def test_stored_text_holds_on_the_plain_code_path_with_one_thread(path, executed):
    stored = nbformat.read(ROOT / path, as_version=4)
    differing = [
        f"cell:\n{source}\nstored:\n{want}\non the plain code path, one thread:\n{got}"
        for (source, want), (_, got) in zip(_texts(stored), _texts(executed[path]), strict=True)
        if want != got
    ]
    assert not differing, "\n\n".join(differing)


def test_the_kernel_really_runs_the_plain_code_path_on_one_thread():
    """The environment above reaches the kernel: PyTorch reports no vector unit, one thread."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
        )
    ]
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute(
        env={**os.environ, **PLAIN}
    )
    assert notebook.cells[0].outputs[0].text.split() == ["DEFAULT", "1"]
