"""The options of the report stage, as data (what a recipe's ``report`` stage may set).

:func:`nas_prune.report.write_report` takes exactly these as keyword options (a test
checks that the two agree, defaults included). They live apart from the report itself so
that reading a recipe (:mod:`nas_prune.recipe`) needs nothing of the report writer, which
reads recipes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportOptions:
    """Options of ``write_report`` besides its folders, data and models.

    Attributes:
        mode / direction / crop_size: how to read the test split (as in evaluation).
        grid_images: rows of the image grid (the first test images).
        title: page title (default: the recipe name).
    """

    mode: str = "aligned"
    direction: str = "AtoB"
    crop_size: int = 256
    grid_images: int = 6
    title: str | None = None
