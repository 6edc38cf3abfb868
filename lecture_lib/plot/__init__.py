r"""Pictures for the course: images, attribution maps, feature maps, filters, the ReLU tables,
and how explanations are evaluated (deletion and insertion curves, the randomization test).

Every function draws one figure and returns it (a ``matplotlib.figure.Figure``); in a notebook
it shows once, whether the call is the cell's last line or not. Arguments are
tensors or numpy arrays and carry the same names everywhere: ``images``, ``attributions``,
``titles``, ``ncols``, ``cmap``.

Images are a batch ``[N, C, H, W]``, one image ``[C, H, W]`` (C = 3: RGB in [0, 1]; C = 1:
grey) or a grey ``[H, W]``; a ``[N, H, W]`` array with N not 1 or 3 is a batch of grey maps.

How an attribution map is coloured (``map_style``):

- signed (any value below 0, or ``signed=True``): the diverging ``"RdBu_r"`` centred at zero,
  red for positive, blue for negative, limits :math:`\pm v` with v the ``clip``-th percentile
  of :math:`|a|` (so one extreme pixel does not wash out the rest);
- magnitudes (every value :math:`\ge 0`): the sequential ``"magma"`` from 0 to v;
- a 3-channel attribution ``[3, H, W]`` is summed over the colour channels (``reduce="sum"``,
  which keeps the sign), or reduced to :math:`\max_k |a_k|` over the colour channels k
  (``"max"``, Simonyan's saliency), or shown as an RGB image :math:`0.5 + a / (2v)` (``"rgb"``,
  the classic guided backprop look).

Every grid of maps carries a labelled colour scale: either the maps share one limit v
(``scale="column"`` or ``"all"``) and the colorbar gives its values, or each map has its own v
(``scale="own"``) and the colorbar says so, with ticks "-max", "0", "max". Figures are at most

One module per kind of picture; every name is used as ``plot.<name>``:

- ``figures``: colours, sizes, the checks of what comes in, ``subplots``, grids, titles;
- ``images``: ``show_images``;
- ``attribution_maps``: ``map_style``, ``heatmap``, ``overlay``, ``overlay_grid``;
- ``feature_maps_and_filters`` (Part 1): ``feature_map_grid``, ``mosaic``, ``filter_grid``;
- ``method_grids``: ``compare_methods``, ``prediction_titles``;
- ``class_model_ascent`` (Part 2): ``score_curve``;
- ``relu_rule_tables`` (Part 2): ``relu_tables``;
- ``evaluation`` (Part 6): ``deletion_insertion``, ``randomization_curves``,
  ``randomization_maps``;
- ``beyond_the_lecture``: ``top_patches``, ``fooling_images``.

Imports go one way: every module imports ``figures`` (and the modules whose drawing it reuses,
such as ``attribution_maps``); ``figures`` imports none of them. A new kind of picture is one
new module and one import line below.
"""

from .attribution_maps import (
    MapStyle,
    draw_map,
    draw_overlay,
    heatmap,
    map_style,
    overlay,
    overlay_grid,
)
from .beyond_the_lecture import fooling_images, top_patches
from .class_model_ascent import score_curve
from .evaluation import (
    PALETTE,
    REFERENCE_STYLES,
    deletion_insertion,
    randomization_curves,
    randomization_maps,
)
from .feature_maps_and_filters import feature_map_grid, filter_grid, mosaic
from .figures import (
    DARK_IMAGE,
    DIVERGING,
    MAX_WIDTH,
    MIN_TITLE_POINTS,
    OWN_RANGE,
    OWN_SCALE,
    REDUCTIONS,
    SCALES,
    SEQUENTIAL,
    NotebookFigure,
    draw_image,
    image_list,
    subplots,
)
from .images import show_images
from .method_grids import TITLE_LINE, class_names_for, compare_methods, prediction_titles
from .relu_rule_tables import RULE_FORMULAS, relu_tables
