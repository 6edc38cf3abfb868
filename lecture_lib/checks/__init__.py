r"""Checks for the exercises: each one runs a student's function on a few cases and compares it
with the library's method (or with the lecture's worked example).

A check prints one line starting with ``✓`` when everything agrees. Otherwise it raises an
``AssertionError`` that says what is wrong, where (which entry, pixel or layer), what was
expected, and the lecture's formula; when the answer matches a typical mistake (the gradient
rule handed in for DeconvNet, the sum over colour channels instead of the max, ...) the
message names it.

    >>> checks.check_relu_backward(my_relu_backward, rule="deconvnet")
    ✓ relu_backward follows the DeconvNet rule on the lecture's 3x3 example.

``seed=None`` checks the lecture's example or a fixed case; a ``seed`` draws fresh random cases
(the hidden tests of the exercises use those).

Every check is written in two halves (a ``Check``): ``run`` calls the student's code on the
cases and returns what came back, as plain numbers, strings and arrays; ``judge`` computes the
reference with the library and compares. In a student's notebook both halves run at once.
When grading, only ``run`` happens in the student's kernel; what it observed is sent out, and
``judge`` decides in the grader's own process (``lecture_lib.grading``), with the same
messages. Nothing the student's code does inside its kernel can change a verdict.

One module per part of the lecture; every name is used as ``checks.<name>``:

- ``core``: ``Check``, the record of library calls, the comparison helpers and messages;
- ``activation_visualization`` (Part 1): feature maps, receptive fields;
- ``perturbation_and_saturation`` (Part 2): the saturating toy by hand, integrated gradients,
  occlusion;
- ``saliency`` (Part 2): saliency, input x gradient, a class model ascent step;
- ``relu_rules`` (Part 2): the DeconvNet and guided backprop rules, four ways;
- ``evaluation`` (Part 6): pointing game, deletion curve, Spearman rank correlation;
- ``beyond_the_lecture``: Grad-CAM, SmoothGrad, the signed step of a fooling image.

Imports go one way: the topic modules import ``core`` and the library's methods; ``core``
imports no topic module, and no method imports a check.

To add a topic: write ``checks/<topic>.py`` (its checks built with ``Check`` and the helpers
of ``.core``), and add one line below, ``from .<topic> import check_<name>, ...``. The grader
finds a check by its name in this package (``getattr(checks, name)``), so a check that is not
imported here cannot be graded.
"""

from .activation_visualization import check_feature_maps, check_receptive_fields, receptive_fields
from .beyond_the_lecture import (
    CONV_LAYERS,
    SMOOTHGRAD_METHODS,
    _smoothgrad_case,
    check_grad_cam,
    check_signed_step,
    check_smoothgrad,
)
from .core import (
    LECTURE_FORWARD_INPUT,
    LECTURE_GRAD_FROM_ABOVE,
    RULE_NAMES,
    RULE_TEXT,
    Check,
    library_calls,
    library_functions,
    library_note,
    observe,
)
from .evaluation import check_deletion_curve, check_pointing_game, check_spearman
from .perturbation_and_saturation import (
    SATURATION_HINTS,
    check_integrated_gradients,
    check_occlusion,
    check_saturation_by_hand,
)
from .relu_rules import (
    check_guided_hooks,
    check_relu_backward,
    check_relu_function,
    check_relu_replacement,
    reference_relu_function,
)
from .saliency import check_ascent_step, check_input_x_gradient, check_saliency
