"""The stored notebooks that the prose and figure tests read: every lecture, and the solutions
of the exercises that draw figures or quote numbers in their prose."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))

SOLUTIONS = [
    ROOT / "solutions" / name / f"{name}.ipynb"
    for name in (
        "01_activations",
        "02_saturation",
        "03_saliency",
        "05_guided_backprop",
        "06_evaluation",
        "07_beyond",
    )
]
