"""The course says what its own outputs and its sources say.

Every number that a sentence quotes from a computation is either written by the notebook itself
(printed, or Markdown rendered from code) or checked here against the stored output it quotes.
nbval keeps the stored outputs equal to a fresh run, so when the model is retrained and the
notebooks are run again, a sentence that no longer holds fails here instead of misleading a
student. The checks read the stored notebooks only; they run in a second.
"""

import re
from functools import cache
from pathlib import Path

import nbformat
import notebooks
import pytest
import torch
from notebooks import ROOT

from lecture_lib import perturbation, rules

LECTURES = {path.stem[:2]: path for path in notebooks.LECTURES}
SOLUTIONS = {path.stem[:2]: path for path in notebooks.SOLUTIONS}


@cache
def notebook(path: Path):
    return nbformat.read(path, as_version=4)


def lecture(number: str):
    return notebook(LECTURES[number])


def solution(number: str):
    return notebook(SOLUTIONS[number])


def cell(nb, text: str):
    """The one cell whose source contains ``text``."""
    found = [c for c in nb.cells if text in c.source]
    assert len(found) == 1, f"{len(found)} cells contain {text!r}"
    return found[0]


def markdown(nb, text: str) -> str:
    found = cell(nb, text)
    assert found.cell_type == "markdown"
    return found.source


def output(nb, text: str) -> str:
    """Everything the code cell whose source contains ``text`` printed or rendered."""
    found = cell(nb, text)
    assert found.cell_type == "code" and found.outputs, f"no stored output for {text!r}"
    parts = []
    for out in found.outputs:
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/markdown", ""))
    return "".join(parts)


def prose(nb) -> list[str]:
    """What a student reads: the Markdown cells and the Markdown that code cells render."""
    texts = [c.source for c in nb.cells if c.cell_type == "markdown"]
    for c in nb.cells:
        if c.cell_type == "code":
            texts += [
                o["data"]["text/markdown"]
                for o in c.outputs
                if "text/markdown" in o.get("data", {})
            ]
    return texts


def row(text: str, label: str) -> list[float]:
    """The numbers on the line of a printed table that starts with ``label``."""
    lines = [line for line in text.splitlines() if line.strip().startswith(label)]
    assert lines, f"no line starting with {label!r} in:\n{text}"
    return [
        float(v)
        for v in re.findall(r"-?\d+\.\d+|-?\d+", lines[0][len(label) + lines[0].index(label) :])
    ]


def flat(text: str) -> str:
    """The text with every run of white space (line breaks too) as one space."""
    return " ".join(text.split())


def numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"(?<![\w.])-?\d+\.\d+", text)]


# === 1. Lecture 06: the table, the mask and the random map ==================================

TABLE_06 = "deletion, insertion, scores = {}, {}, {}"
KEYS = ("exact", "near", "share", "deletion", "insertion")


def table_06() -> dict[str, dict[str, float]]:
    text = output(lecture("06"), TABLE_06)
    names = [
        "gradient = saliency",
        "input × gradient",
        "DeconvNet",
        "guided backprop",
        "IG (mean)",
        "DeepLIFT (black)",
        "DeepLIFT (mean)",
        "occlusion",
        "mask (ideal)",
        "random",
    ]
    return {name: dict(zip(KEYS, row(text, name))) for name in names}


def test_06_reading_says_which_methods_reach_or_pass_the_mask():
    table = table_06()
    reading = output(lecture("06"), "def value(name, key):")
    methods = [name for name in table if name not in ("mask (ideal)", "random")]
    mask = table["mask (ideal)"]
    lower_is_better = {"deletion"}
    for key in KEYS:
        for name in methods:
            better = (
                (table[name][key] < mask[key])
                if key in lower_is_better
                else (table[name][key] > mask[key])
            )
            if better or table[name][key] == mask[key]:
                assert (
                    f"**{name}" in reading or f", {name}" in reading or f"and {name}" in reading
                ), (
                    f"{name} reaches the mask on {key} ({table[name][key]} vs {mask[key]}), "
                    "but the reading does not say so"
                )
    beaten = [n for n in methods if table[n]["deletion"] < mask["deletion"]]
    assert beaten, "the table no longer shows a method below the mask's deletion AUC"
    for text in prose(lecture("06")):
        if "none reaches the mask" in text or "no method reaches the mask" in text.lower():
            pytest.fail(
                f"a sentence says no method reaches the mask, but {beaten} do: {text[:200]}"
            )


def test_06_every_method_beats_random_only_where_the_table_says_so():
    table = table_06()
    methods = [name for name in table if name not in ("mask (ideal)", "random")]
    random = table["random"]
    all_beat = all(
        (table[n][k] < random[k]) if k == "deletion" else (table[n][k] > random[k])
        for n in methods
        for k in KEYS
    )
    claims = [t for t in prose(lecture("06")) if "beats the random map on every measure" in t]
    assert bool(claims) == all_beat


def test_06_black_substrate_sentence_matches_its_table():
    text = output(lecture("06"), "ideal = evaluate.deletion_curve(")
    mask, random = row(text, "black")
    assert "*worse* than deleting pixels at random" in markdown(
        lecture("06"), "With black, deleting"
    )
    assert mask > random


# === 2. Lecture 03: the softmax objective ======================================================


def softmax_table():
    """{class: {objective: [S_c, P_c, others mean, others max, distance]}} from lecture 03."""
    text = output(lecture("03"), 'objectives = {"softmax": "P_c"')
    table, current = {}, None
    for line in text.splitlines()[1:]:
        if line and not line.startswith(" "):
            current = table.setdefault(line.strip(), {})
        elif line.strip():
            name = line[:17].strip()
            current[name] = [float(v) for v in line[17:].split()]
    return table


def test_03_posterior_ascent_raises_the_score_more_than_it_lowers_the_others():
    table = softmax_table()
    assert len(table) == 5
    for name, rows in table.items():
        for objective in ("P_c", "log P_c"):
            rise = rows[objective][0] - rows["grey start"][0]
            fall = rows["grey start"][2] - rows[objective][2]
            assert rise > 3 * max(fall, 0), (name, objective, rise, fall)
            assert rows[objective][1] > 0.95  # saturated: the gradient factor 1 - P_c is small
    for text in prose(lecture("03")):
        assert "reached by lowering the other scores" not in text


def test_03_softmax_reading_quotes_the_table():
    table = softmax_table()
    reading = output(lecture("03"), "def spread(values, digits=1):")
    rises = [rows["P_c"][0] - rows["grey start"][0] for rows in table.values()]
    falls = [rows["grey start"][2] - rows["P_c"][2] for rows in table.values()]
    low, high = (float(v) for v in re.search(r"rises by\s+([\d.]+)-([\d.]+)", reading).groups())
    assert abs(low - min(rises)) <= 0.15 and abs(high - max(rises)) <= 0.15
    low, high = (
        float(v) for v in re.search(r"falls by only\s+([\d.]+)-([\d.]+)", reading).groups()
    )
    assert abs(low - min(falls)) <= 0.15 and abs(high - max(falls)) <= 0.15
    assert "saturates" in reading and "log P_c" in reading
    assert "P_c (1 - P_c)" in reading


# === 3. Lecture 06: the randomization test =====================================================


def randomization_06():
    text = output(lecture("06"), "sanity_methods = {")
    names = ["gradient", "guided backprop", "DeconvNet", "DeepLIFT (mean)", "IG (mean, 4 steps)"]
    return {name: row(text, name) for name in names}  # 6 layers, then the class correlation


def test_06_randomization_reading_states_every_result():
    table = randomization_06()
    reading = output(lecture("06"), "rho = {name: dict(zip(layers, result.mean))")
    quoted = set(re.findall(r"-?\d\.\d\d", reading))

    def says(value):
        return f"{value:.2f}" in quoted

    assert says(table["gradient"][0]), "the gradient's rho after the top layer"
    assert says(table["guided backprop"][0])
    assert says(table["DeconvNet"][0]) and says(table["DeconvNet"][-1]), "DeconvNet: rho and class"
    assert says(table["DeepLIFT (mean)"][5]) and says(table["IG (mean, 4 steps)"][5])
    # what the sentences conclude must hold in the table
    assert table["guided backprop"][0] > 0.9 > table["gradient"][0]  # fails / changes more
    assert table["gradient"][0] > 0.5  # ... but keeps much of its map
    assert table["DeconvNet"][-1] > 0.7 and abs(table["DeconvNet"][0] - table["gradient"][0]) < 0.1
    assert min(table["DeepLIFT (mean)"][5], table["IG (mean, 4 steps)"][5]) > 0.45


def test_06_no_unqualified_pass_for_the_gradient():
    rho = randomization_06()["gradient"][0]
    for text in prose(lecture("06")):
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            if "gradient passes" in sentence:
                assert "ImageNet" in sentence or f"{rho:.2f}" in text or "only" in sentence, (
                    sentence
                )


# === 4. Lecture 03 (and the course): notation ==================================================

OWNED_TEXT = [*LECTURES.values(), *SOLUTIONS.values()]


@pytest.mark.parametrize("path", OWNED_TEXT, ids=[f"{p.parent.name}/{p.stem}" for p in OWNED_TEXT])
def test_colour_channels_are_not_indexed_by_c(path):
    """c is the class; a maximum over colour channels runs over k."""
    for text in (c.source for c in notebook(path).cells):
        assert not re.search(r"\\max_c\s*\\?\|", text), text[:300]
        assert "max_c |" not in text and "max_c(" not in text
        assert not re.search(r"(?<![\w-])grey image\b", text), "a grey-scale image, or mid-grey?"


def test_03_defines_h_before_using_it():
    text = markdown(lecture("03"), "## 2. Why is this image classified so?")
    assert (
        "$h(i, j)$ is the index of the element of\n$w$" in text or "$h(i, j)$ is the index" in text
    )
    assert text.index("$h(i, j)$ is the index") < text.index(r"\max_k |w_{h(i,j,k)}|")
    assert "grey-scale image" in text


# === 5. Lecture 05: why gradient maps are noisy ================================================


def test_05_noise_is_springenbergs_motivation_and_other_causes_are_cited():
    for text in prose(lecture("05")):
        if "noisy" in text and "What to remember" not in text:
            assert "Springenberg" in text and "Smilkov" in text and "Balduzzi" in text, text[:200]
    sources = markdown(lecture("05"), "## Sources\n")  # not its continuation
    assert "SmoothGrad" in sources and "shattered gradients" in sources


# === 6. Lecture 02: the gradient at the kink ===================================================


def test_02_gradient_on_the_kink_is_explained():
    nb = lecture("02")
    table = output(nb, "table = {name: method(toy, points[1:])")
    for point in ("(1.00, 0.00)", "(0.00, 1.00)"):
        line = next(line for line in table.splitlines() if line.startswith(point))
        assert line.split()[3:5] == ["(0.00,", "0.00)"]  # the gradient column
    text = markdown(nb, "kink $i_1 + i_2 = 1$, not beyond it")
    assert r"\operatorname{relu}'(0) = 0" in text and "i_1 + i_2 > 1" in text
    kink = output(nb, "for point in ([0.99, 0.0], [1.0, 0.0], [1.01, 0.0]):")
    assert kink.splitlines() == [
        "i1 + i2 = 0.99: gradient (1.00, 1.00)",
        "i1 + i2 = 1.00: gradient (0.00, 0.00)",
        "i1 + i2 = 1.01: gradient (0.00, 0.00)",
    ]


def test_02_defines_m():
    text = markdown(lecture("02"), r"\alpha_k = (k + \tfrac12)/m")
    assert "$m$ = `steps`" in text


# === 7. Slips of the lecture text, and the dates of the sources ===============================


def test_03_flags_the_slips_of_the_slides():
    nb = lecture("03")
    assert "slip for *maximizes*" in markdown(nb, "### The score $S_c$, not the posterior $P_c$")
    maxpool = markdown(nb, "### Gradients (the backward pass of a ConvNet) in detail")
    assert "That is a slip" in maxpool and "second\nfactor" in maxpool
    assert "that is a slip" in markdown(lecture("02"), "## The saturation problem")


DATED_FILES = [
    *OWNED_TEXT,
    ROOT / "README.md",
    *sorted((ROOT / "lecture_lib" / "plot").glob("*.py")),
]


@pytest.mark.parametrize(
    "path", DATED_FILES, ids=[f"{p.parent.name}/{p.name}" for p in DATED_FILES]
)
def test_zeiler_and_fergus_is_dated_2014_everywhere(path):
    text = path.read_text()
    if path.suffix == ".ipynb":
        text = "\n".join(c.source for c in notebook(path).cells)
    for year in re.findall(r"Zeiler (?:&|and) Fergus,? \(?(\d{4})", text):
        assert year == "2014", f"{path.name}: Zeiler & Fergus {year}"
    for entry in re.findall(
        r"Visualizing and understanding convolutional\s+networks\.[^\n]*\n?[^\n]*", text
    ):
        assert "ECCV, 2014" in entry and "CoRR" not in entry, entry


def test_04_cites_the_first_deconvolutional_networks():
    nb = lecture("04")
    assert "Zeiler, Krishnan, Taylor & Fergus 2010" in markdown(nb, "## DeconvNet: the idea")
    assert "Deconvolutional\n  networks. CVPR, 2010." in markdown(nb, "## Sources")


def wrapped_numbers(text: str) -> list[str]:
    """Lines that a Markdown renderer may take for a numbered list item although they are not
    one: a number and '.' or ')' that neither starts a list (1.) nor continues one (n + 1.),
    such as the year of a source wrapped onto its own line."""
    found, expected = [], None
    for line in text.splitlines():
        match = re.match(r"\s*(\d+)[.)](\s|$)", line)
        if match:
            number = int(match.group(1))
            if number in (1, expected):
                expected = number + 1
            else:
                found.append(line)
        elif line.strip() and not line.startswith(" "):
            expected = None  # a new paragraph or bullet, not the continuation of an item
    return found


def test_no_wrapped_line_starts_like_a_numbered_item():
    assert wrapped_numbers("- a source, arXiv:1312.6034,\n  2013.") == ["  2013."]
    assert wrapped_numbers("1. one\n2. two\n   more\n3. three") == []
    assert wrapped_numbers("Learning,\n  2017. arXiv:1706.03825.") == ["  2017. arXiv:1706.03825."]
    for path in OWNED_TEXT:
        for c in notebook(path).cells:
            if c.cell_type == "markdown":
                assert not wrapped_numbers(c.source), (path.name, wrapped_numbers(c.source))


# === 8. Answer keys and the README =============================================================


def answer(nb) -> str:
    """The instructor's written answer (the graded Markdown cell)."""
    (found,) = [
        c
        for c in nb.cells
        if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")
    ]
    return found.source


def item(text: str, number: int) -> str:
    """Item ``number`` of a numbered list."""
    return re.search(rf"^{number}\. (.*?)(?=^\d+\. |^###|\Z)", text, re.S | re.M).group(1)


def test_05_answer_quotes_the_correlations_printed_above_it():
    nb = solution("05")
    printed = output(nb, "other = (labels + 2) % 5")
    line = {
        name: next(x for x in printed.splitlines() if f"{name}:" in x)
        for name in ("gradient", "guided backprop")
    }
    gradient, guided = numbers(line["gradient"]), numbers(line["guided backprop"])
    text = item(answer(nb), 2)
    assert numbers(text) == [*guided, *gradient], (numbers(text), guided, gradient)


@pytest.mark.parametrize("number", ["06", "07", "08"])
def test_answer_quotes_only_numbers_printed_in_its_notebook(number):
    nb = solution(number)
    printed = "".join(
        out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs
    )
    quoted = re.findall(r"(?<![\w.])-?\d+\.\d+", answer(nb))
    assert quoted
    for value in quoted:
        assert value in printed, f"the answer of {number} quotes {value}, which no output prints"


def test_05_answer_names_the_entries_that_survive_the_guided_rule():
    kept = rules.relu_backward(
        [[1, -1, 5], [2, -5, -7], [-3, 2, 4]], [[-2, 3, -1], [6, -3, 1], [2, -1, 3]], "guided"
    )
    survivors = [(i, j, int(kept[i][j])) for i in range(3) for j in range(3) if kept[i][j]]
    text = item(answer(solution("05")), 1)
    for i, j, v in survivors:
        assert f"({i}, {j}), value {v}" in text
    assert text.startswith("Only ") and text.count(", value ") == len(survivors)


def test_02_answer_quotes_the_largest_drops_printed_above_it():
    nb = solution("02")
    printed = output(nb, "yours = occlusion_map(model, images[0]")
    drops = {
        match[0]: (float(match[1]), float(match[2]))
        for match in re.findall(
            r"(\w+): largest mean drop with window 8:\s+([\d.]+), window 24:\s+([\d.]+)", printed
        )
    }
    assert len(drops) == 4
    text = item(answer(nb), 2)
    assert "bigger for every image" in text and all(
        large > small for small, large in drops.values()
    )
    for name, (small, large) in drops.items():
        assert f"{name} ({small:.2f} to {large:.2f})" in text, name
    biggest, least = (
        max(drops, key=lambda n: drops[n][1] / drops[n][0]),
        min(drops, key=lambda n: drops[n][1] / drops[n][0]),
    )
    assert text.index(f"the {biggest}") < text.index("only a little for the " + least)


def test_02_answer_counts_the_forward_passes():
    positions = len(perturbation.window_positions(64, 8, 4))
    text = item(answer(solution("02")), 3)
    assert f"{positions} positions per axis, {positions} x {positions} = {positions**2}" in text
    assert f"{positions**2 + 1} forward passes" in text


def test_01_answer_gets_the_receptive_field_share_right():
    nb = solution("01")
    printed = output(nb, "checks.check_receptive_fields(receptive_field)")
    side, image = (
        int(v) for v in re.search(r"sees (\d+) x \1 pixels of the (\d+) x", printed).groups()
    )
    text = item(answer(nb), 2)
    assert f"{side} x {side} pixels of the {image} x {image} image" in text
    assert f"({side**2 / image**2:.0%})".replace("%", " %") in text
    assert ("more than\n   half of its width" in text) == (side / image > 0.5)
    assert "more than\n   half of it." not in text
    shapes = output(nb, 'maps = feature_maps_with_hooks(model, images, ["relu1", "relu4"])')
    channels = int(re.search(r"relu4: \(\d+, (\d+),", shapes).group(1))
    assert f"{channels} channels at `relu4`, of which we\n   looked at 16" in answer(nb)


def test_03_answer_and_demonstration_agree_and_the_result_is_recognisable():
    nb = solution("03")
    printed = output(nb, "def from_grey(x):")
    share = float(re.search(r"at mid-grey: ([\d.]+)%", printed).group(1))
    assert f"at {share:.1f} % of the pixels" in flat(item(answer(nb), 2))
    scores = [float(v) for v in re.findall(r"S_star =\s+(-?[\d.]+)", printed)]
    slide, from_grey, library = scores
    assert from_grey > 0.5 * library > slide  # the right steps, measured from grey, draw a class
    intro = markdown(nb, "Your steps at work, three ways")
    assert "almost black, and that is right" in intro and "2\\lambda I = 0.05" in intro


def test_readme_states_the_class_model_penalty_as_the_code_does():
    readme = (ROOT / "README.md").read_text()
    (line,) = [
        line for line in readme.splitlines() if line.startswith("| `lecture_lib.class_model`")
    ]
    assert r"\|\|I - 0.5\|\|^2" in line
    from lecture_lib import class_model

    assert class_model.GREY == 0.5  # the mean image the code measures from


def test_03_states_one_convention_for_the_penalty():
    nb = lecture("03")
    assert r"\lambda \|I - \bar I\|_2^2" in markdown(nb, "## 1. What is a model of a class?")
    assert r"\lambda \|I - 0.5\|_2^2" in markdown(nb, "`class_model.visualize(model, c)` starts")
    remember = markdown(nb, "## What to remember")
    assert r"\|I - \bar I\|_2^2" in remember and r"\|I\|_2^2" not in remember


# === Numbers quoted in the lectures' Markdown =================================================


def receptive_fields() -> dict[str, int]:
    """ShapesNet's receptive fields, from its layers (r_l = r + (k - 1) j, j_l = j s)."""
    from lecture_lib.models import load_shapes_net

    r, j, fields = 1, 1, {}
    for name, module in load_shapes_net().named_modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.MaxPool2d):
            k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            s = module.stride if isinstance(module.stride, int) else module.stride[0]
            r, j = r + (k - 1) * j, j * s
            fields[name] = r
    return fields


def test_receptive_fields_quoted_in_the_lectures():
    fields = receptive_fields()
    r1, r2, r3, r4 = (fields[f"conv{k}"] for k in (1, 2, 3, 4))
    text = flat(markdown(lecture("01"), "## Higher layers: larger parts of the object"))
    assert (
        f"`relu1` sees {r1} x {r1} pixels, of `relu2` {r2} x {r2}, of `relu3` {r3} x {r3}, "
        f"of `relu4` {r4} x {r4}" in text
    )
    assert f"${r3} \\times {r3}$ pixels" in flat(
        markdown(lecture("04"), "Each map is a small patch")
    )
    assert f"{r3} x {r3} pixels" in output(lecture("04"), "support = maps.abs().sum(dim=1) > 0")
    assert f"${r4} \\times {r4}$ pixels" in flat(markdown(lecture("05"), "## A neuron of `conv4`"))


def test_01_activity_and_counts():
    nb = lecture("01")
    text = output(nb, "per_channel = m.flatten(1).amax(dim=1)")
    units = {name: row(text, name)[-2] for name in ("relu1", "relu2", "relu3", "relu4")}
    channels = {name: row(text, name)[-1] for name in ("relu2", "relu3", "relu4")}
    sentence = markdown(nb, "The ReLU sets every negative value to zero")
    assert "about half of the units" in sentence and 0.4 <= units["relu1"] <= 0.6
    assert "a quarter or a fifth" in sentence and all(
        0.17 <= units[n] <= 0.3 for n in ("relu2", "relu3", "relu4")
    )
    assert "A few channels never fire" in sentence and min(channels.values()) < 1.0
    counts = output(nb, "total_maps, total_values = 0, 0")
    maps = int(re.search(r"(\d+) feature maps for one image", counts).group(1))
    values, pixels = (
        int(v.replace(",", ""))
        for v in re.search(r"([\d,]+) activations for one image of ([\d,]+)", counts).groups()
    )
    drawback = markdown(nb, "Even this small network shows")
    assert f"shows {maps} maps" in drawback and "ten times as many numbers" in drawback
    assert 8 <= values / pixels <= 12
    assert f"({maps} for ShapesNet" in markdown(nb, "## What to remember")
    tops = output(nb, 'print(f"image  predicted  strongest of {low:<6}')
    first = {line.split("[")[1].split(",")[0] for line in tops.splitlines()[1:] if "[" in line}
    assert len(first) == 1  # "largely the same for every image": the same strongest relu1 channel


def test_01_vgg16_map_count():
    torchvision = pytest.importorskip("torchvision")
    vgg = torchvision.models.vgg16(weights=None)
    convs = [m for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    count = sum(m.out_channels for m in convs)
    assert f"VGG16 has {count:,} maps in its {len(convs)} convolution layers" in markdown(
        lecture("01"), "Even this small network shows"
    )


def test_02_occlusion_sentences():
    nb = lecture("02")
    mean = row(
        output(nb, "shares = evaluate.mask_share(occluded, masks, per_example=True)"), "mean"
    )
    area, share, pointing = mean
    text = markdown(nb, "The object covers about an eighth")
    assert 0.1 <= area <= 0.16 and 0.28 <= share <= 0.4 and pointing > 0.5
    passes = output(nb, 'print("method                  passes per image')
    counts = [int(v) for v in re.findall(r"(\d+) forward\b", passes)]
    assert counts == sorted(counts, reverse=True)  # smaller windows: more passes
    assert "Small windows cost the most passes" in markdown(
        nb, "Small windows cost the most passes"
    )
    assert text


def test_02_saturation_table_sentences():
    nb = lecture("02")
    table = output(nb, "table = {name: method(toy, points[1:])")
    line = next(line for line in table.splitlines() if line.startswith("(1.50, 0.50)"))
    assert line.split()[-4:] == ["(0.75,", "0.25)", "(0.75,", "0.25)"]
    assert "(0.50, 0.00)" in line
    assert "as $(0.75, 0.25)$" in markdown(nb, "Below saturation, at $(0.3, 0.2)$")
    assert "credits only $i_1$, with 0.5" in markdown(nb, "Below saturation, at $(0.3, 0.2)$")


def test_03_numbers():
    nb = lecture("03")
    table = output(nb, "class_images, scores = class_model.visualize(model, class_ids, size=size)")
    probabilities = [
        row(table, name)[1] for name in ("circle", "square", "triangle", "cross", "star")
    ]
    assert (
        "probability above 0.99" in markdown(nb, "Every class model is classified")
        and min(probabilities) > 0.99
    )
    ratio = float(
        re.search(
            r"rate along w / rate along the random d: (\d+)", output(nb, "def class_score(image):")
        ).group(1)
    )
    assert "about a hundred times more slowly" in markdown(
        nb, "For small steps the two columns agree"
    )
    assert 50 <= ratio <= 200
    pointing = output(nb, "near = evaluate.pointing_game(saliency, masks, tolerance=1")
    area, share, hit, near = row(pointing, "mean")
    rows_ = [line.split() for line in pointing.splitlines()[2:-1]]
    misses = sum(float(r[4]) == 0 for r in rows_)
    near_misses = sum(float(r[4]) == 0 and float(r[5]) == 1 for r in rows_)
    sentence = markdown(nb, "The saliency map puts about twice")
    assert 1.7 <= share / area <= 2.5
    assert f"misses the object in {misses} of the {len(rows_)} images" in sentence
    assert f"in {near_misses} of them it lies just one pixel outside" in sentence
    both = output(
        nb, 'for name, maps in (("saliency", saliency), ("input x gradient", input_x_grad))'
    )
    assert row(both, "input x gradient")[0] > row(both, "saliency")[0]
    square = output(nb, "dark[square] = 0.0")
    counts = [int(v) for v in re.findall(r":\s+(\d+)$", square, re.M)]
    assert counts[1] == counts[0] and counts[2] == 0  # gradient non-zero everywhere, IxG zero
    inside, everywhere = (
        float(v) for v in re.findall(r"mean \|w\| in the \w+:\s+([\d.]+)", square)
    )
    assert inside >= everywhere  # "as large as elsewhere"


def test_04_and_05_method_comparisons():
    text = output(lecture("04"), "print(f\"{'method':<10} {'mask share':>11}")
    gradient, deconvnet = row(text, "gradient"), row(text, "DeconvNet")
    assert deconvnet[1] >= 2 * gradient[1] - 1e-9 and deconvnet[0] < gradient[0]
    assert "twice as often as the gradient's" in markdown(
        lecture("04"), "On ShapesNet the DeconvNet's strongest pixel"
    )
    correlation = output(lecture("04"), "print(f\"{'method':<10} {'correlation between maps")
    assert row(correlation, "gradient")[0] < 0 and row(correlation, "DeconvNet")[0] > 0.8
    numbers_05 = output(lecture("05"), "for maps in (class_maps, neuron_maps)")
    g, d, gb = (row(numbers_05, name) for name in ("gradient", "DeconvNet", "guided backprop"))
    assert gb[0] == max(g[0], d[0], gb[0]) and gb[1] == d[1] and gb[1] >= 2 * g[1] - 1e-9
    class_spread = max(g[0], d[0], gb[0]) - min(g[0], d[0], gb[0])
    neuron_spread = max(g[2], d[2], gb[2]) - min(g[2], d[2], gb[2])
    assert neuron_spread < class_spread  # "for the conv4 neuron the three come closer"
    by_class = output(lecture("05"), "print(f\"{'method':<16} {'correlation between maps")
    assert (
        row(by_class, "guided backprop")[0]
        > row(by_class, "DeconvNet")[0]
        > 0
        > row(by_class, "gradient")[0]
    )


def test_09_names_the_methods_that_miss_the_shortcut():
    nb = lecture("09")
    printed = output(nb, "exposes = [name for name in METHODS")
    others = re.search(r"the others: (.*)$", printed, re.M).group(1)
    assert others == "HiResCAM"  # "HiResCAM is the method named under 'the others'"
    text = markdown(nb, "### Reading the table")
    assert '**HiResCAM** is the method named under "the others"' in text
    ranked = re.findall(r"^\s+\d+\. (.+?)\s{2,}([\d.]+)", printed, re.M)
    peaks = [name for name, _ in ranked]
    # "DeconvNet and guided backprop find it least often among the maps drawn at the pixels"
    assert set(peaks[-3:-1]) == {"DeconvNet", "guided backprop"} and peaks[-1] == "HiResCAM"


def test_02_answer_quotes_the_shares_of_the_samplers_printed_above_it():
    nb = solution("02")
    printed = output(nb, "share = evaluate.mask_share(m, masks)")
    shares = {
        name.strip(): float(value)
        for name, value in re.findall(r"([\w ]+): share of the map on the object ([\d.]+)", printed)
    }
    assert set(shares) == {"grey occlusion", "marginal", "conditional"}
    text = item(answer(nb), 4)
    assert f"the share of its map on the object is {shares['marginal']:.2f}" in text
    assert f"against {shares['conditional']:.2f}\n   for the conditional sampler" in text
    assert f"Grey occlusion scores {shares['grey occlusion']:.2f}" in text
    assert shares["marginal"] < shares["conditional"] < shares["grey occlusion"]


def test_11_prose_says_what_the_measures_print():
    nb = lecture("11")
    printed = output(nb, 'print("method           pointing game')
    rows = {line[:15].strip(): numbers(line[15:]) for line in printed.splitlines()[1:]}
    grey, conditional = rows["grey occlusion"], rows["conditional"]
    assert conditional[1] > grey[1] and conditional[2] < grey[2]  # mask share, deletion AUC
    assert "lies more on the object" in markdown(nb, "With only four images the pointing game")
    cheat = output(nb, 'print("method           points at the mark')
    cheat_rows = {line[:15].strip(): numbers(line[15:]) for line in cheat.splitlines()[1:]}
    assert all(values[0] == 1.0 for values in cheat_rows.values())
    assert max(cheat_rows, key=lambda name: cheat_rows[name][1]) == "conditional"
    assert "every map's maximum lies within two pixels of the mark" in markdown(
        nb, "All three find the shortcut"
    )


# === Lectures 07 to 09 and the answer keys of exercises 05 to 07 ==============================
TABLE_07 = "scores = scores_table(maps | references)"
KEYS_07 = ("exact", "near", "share", "deletion", "insertion")


def table_07() -> dict[str, dict[str, float]]:
    text = output(lecture("07"), TABLE_07)
    names = ["gradient", "SmoothGrad²", "SmoothGrad", "guided backprop", "guided Grad-CAM"]
    names += ["Grad-CAM, conv4 (no ReLU)", "Grad-CAM", "mask (ideal)", "random"]
    found = {}
    for name in names:
        line = next(x for x in text.splitlines() if x.startswith(name + "  "))
        found[name] = dict(zip(KEYS_07, numbers(line[len(name) :])))
    return found


def test_07_grad_cam_takes_the_rectified_maps_and_says_why_the_layer_matters():
    nb = lecture("07")
    text = flat(markdown(nb, "## Grad-CAM\n"))
    assert "after its ReLU" in text and "relu4" in text and "authors' code" in text
    assert "generalise CAM" in text and "VGG-16" in text
    table = table_07()
    rectified, raw = table["Grad-CAM"], table["Grad-CAM, conv4 (no ReLU)"]
    # "on ShapesNet the unrectified conv4 maps score far worse than relu4's"
    assert rectified["exact"] > raw["exact"] + 0.1 and rectified["share"] > raw["share"]
    said = flat(output(nb, 'raw = scores[f"Grad-CAM, {before_relu} (no ReLU)"]'))
    assert f"exactly in {raw['exact']:.0%}" in said and f"{rectified['exact']:.0%} and" in said
    reading = flat(markdown(nb, "## Why Grad-CAM blurs"))
    assert "later critique (Draelos & Carin 2020), not a premise of Grad-CAM" in reading
    remember = flat(markdown(nb, "## What to remember"))
    assert "assumes a head that averages" not in remember and "HiResCAM" in remember


def test_07_quotes_the_object_share_against_the_even_map():
    nb = lecture("07")
    table = table_07()
    said = flat(output(nb, 'share = scores["Grad-CAM"]["share"]'))
    share, even = table["Grad-CAM"]["share"], table["random"]["share"]
    assert f"puts {share:.0%} of its mass" in said and f"puts {even:.0%} of its mass" in said
    assert f"{share / even:.1f} times" in said
    assert "hardly more than a map spread evenly" not in said


def test_07_smoothgrad_premise_is_the_input_moving():
    nb = lecture("07")
    text = flat(markdown(nb, "## SmoothGrad"))
    assert "jumps as the **input** moves" in text and "section 2" in text
    assert "from one pixel to the next" not in text
    sweep = flat(markdown(nb, "At 0 % it is the saliency map itself"))
    assert "outline stays" not in sweep and "does not trace the shape's outline" in sweep
    levels = cell(nb, "levels = [").source
    assert "levels = [0.0, 0.05, 0.15, 0.3]" in levels  # the 0 % and 30 % that it describes


def test_07_class_correlation_says_it_correlates_magnitudes():
    nb = lecture("07")
    text = flat(markdown(nb, "## Class-blind maps: a reminder"))
    assert "**importance**" in text and "Parts 4 to 6 correlate the *signed* maps" in text


def test_07_sanity_reading_matches_adebayo_or_says_it_does_not():
    nb = lecture("07")
    printed = output(nb, "sanity = {")
    after_top = {name: row(printed, name)[0] for name in ("guided backprop", "guided Grad-CAM")}
    grad_cam = [x for x in printed.splitlines() if x.startswith("Grad-CAM ")][0]
    after_top["Grad-CAM"] = numbers(grad_cam)[0]
    said = flat(output(nb, "after_top = {name: result.mean[0]"))
    gg, gb, gc = after_top["guided Grad-CAM"], after_top["guided backprop"], after_top["Grad-CAM"]
    if gc < gg < gb:
        assert "as Adebayo et al. found on ImageNet" in said
    else:
        assert "as Adebayo et al. found" not in said
    assert "Inception v3" in markdown(nb, "## The sanity check")


def test_07_and_09_name_the_per_position_variant_hirescam():
    for number in ("07", "09"):
        nb = lecture(number)
        code = "".join(c.source for c in nb.cells if c.cell_type == "code")
        plain = code.replace("guided_grad_cam(model, images, elementwise=True)", "")
        assert "elementwise=True)" not in plain and "hires_cam" in code
        texts = prose(nb)
        assert not any("Grad-CAM, per position" in t or "Grad-CAM per position" in t for t in texts)
    nb = lecture("09")
    table = markdown(nb, "| method | the map | here |")  # a slide of its own
    assert "| HiResCAM (part 7) |" in table
    after = nb.cells[nb.cells.index(cell(nb, "| method | the map | here |")) + 1]
    assert after.source.startswith("HiResCAM is not Grad-CAM")


def fooling_table() -> list[tuple[bool, int]]:
    printed = output(lecture("08"), "fooled = fooling.fooling_image(model, images, runner_up)")
    rows = re.findall(r"^\s+\d+\s+\d+ -> \d+\s+(yes|no)\s.*= (\d+)/255$", printed, re.M)
    assert rows
    return [(ok == "yes", int(level)) for ok, level in rows]


def test_08_quotes_the_grey_levels_of_the_fooled_images_only():
    rows = fooling_table()
    fooled = [level for ok, level in rows if ok]
    said = flat(output(lecture("08"), "grey_levels = fooled.linf[ok] * 255"))
    assert f"between {min(fooled)} and {max(fooled)} grey levels" in said
    for ok, level in rows:
        if not ok:
            assert f"not fooled even after {level} grey levels" in said


def test_08_taylor_within_a_small_factor_only_for_the_fooled_images():
    said = flat(output(lecture("08"), "ratio_l2 = (fooled.l2 / taylor.l2)[fooled.fooled]"))
    assert said.startswith("For the images that were fooled")
    ratios = [float(v) for v in re.findall(r"needed (\d+\.\d) to (\d+\.\d) times", said)[0]]
    assert max(ratios) < 3 and min(ratios) > 1 / 3
    if any(not ok for ok, _ in fooling_table()):
        assert "it fails" in said
    remember = flat(markdown(lecture("08"), "## What to remember"))
    assert "far below what a person notices" not in remember
    assert "for the images it fools" in remember


def test_08_random_pixels_and_the_objects_own_pixels():
    nb = lecture("08")
    printed = output(nb, "choices = {")
    sizes = {
        name: [float(v) for v in re.findall(r"\d+\.\d+", line)]
        for name in ("largest gradient", "object", "random")
        for line in printed.splitlines()
        if line.startswith(name)
    }
    said = flat(output(nb, "steep, obj, rand = mean"))
    ratio = sum(sizes["random"]) / sum(sizes["largest gradient"])
    assert f"random pixels need {ratio:.1f} times the length" in said
    assert "far more cheaply" not in flat(markdown(nb, "## What to remember"))


def test_08_teaches_adversarial_examples_and_fooling_images():
    nb = lecture("08")
    intro = flat(markdown(nb, "# Lecture 6, beyond the lecture (part 8)"))
    assert "**adversarial examples** (Szegedy et al. 2014; Goodfellow et al. 2015)" in intro
    assert "**fooling images** (Nguyen et al. 2015)" in intro and "Part 3's class models" in intro
    sources = flat(markdown(nb, "## Sources\n"))  # not its continuation
    assert "Nguyen, Anh, Yosinski, Jason, and Clune, Jeff" in sources
    assert "Szegedy, Christian" in sources
    assert "variant of Goodfellow et al. (2015)'s **fast gradient sign method**" in flat(
        markdown(nb, "## Did the Taylor expansion predict it?")
    )
    printed = output(nb, "class_images, _ = class_model.visualize(model, class_ids, size=size)")
    lowest = min(float(v) for v in re.findall(r"\d\.\d{4}", printed))
    said = flat(output(nb, "The network gives every class model"))
    assert f"at least {lowest:.4f}" in said
    assert ("fooling images in Nguyen et al.'s sense" in said) == (lowest > 0.9)
    neuron = flat(markdown(nb, "## Feature visualization"))
    assert "**fixed** position" in neuron and 'reduce="max"' in neuron


def test_answer_keys_05_and_07_say_only_what_their_outputs_support():
    assert "drops the noise of the other two" not in answer(solution("05"))
    nb = solution("07")
    assert "the smallest change of every pixel" not in flat(nb.cells[0].source)
    question = flat(markdown(nb, "1. Which network looks at the mark"))
    assert "can it tell you which pixels matter?" in question
    hook = flat(markdown(nb, "## Question 1 · Grad-CAM with a forward hook"))
    assert "`relu4`" in hook and "after its ReLU" in hook
    assert "lights up background" in flat(markdown(nb, "Grad-CAM asks about one class."))
    assert "equal to attribution.grad_cam: True" in output(nb, "same = torch.allclose(")


def test_10_readings_quote_only_numbers_printed_in_the_lecture():
    """Every decimal number of lecture 10's prose is one of its printed outputs."""
    nb = lecture("10")
    printed = "".join(
        out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs
    )
    prose = [
        c.source for c in nb.cells if c.cell_type == "markdown" and "## Sources" not in c.source
    ]
    quoted = [v for text in prose for v in re.findall(r"(?<![\w.^{])-?\d+\.\d+", text)]
    assert len(quoted) > 10
    for value in quoted:
        assert value in printed, f"lecture 10 quotes {value}, which no output prints"
