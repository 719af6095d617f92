"""Boxes as a CSV table, one row per box: the export's ``csv`` format. The web app's
predict playground writes the same columns in the same order and number format
(frontend/src/features/models/csv.ts), so the two files can be compared or joined."""

from __future__ import annotations

COLUMNS = ("file", "class", "confidence", "x", "y", "w", "h", "x_px", "y_px", "w_px", "h_px")

# A cell starting with one of these is run as a formula by Excel, LibreOffice and
# Google Sheets (CSV injection); file and class names come from users.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: str) -> str:
    """A user-supplied text cell that a spreadsheet shows as text, never evaluates."""
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


def box_row(
    file: str,
    class_name: str,
    confidence: float | None,
    box: tuple[float, float, float, float],
    width: int,
    height: int,
) -> list[str]:
    """``box`` is (x, y, w, h): top-left corner and size, normalised to the image;
    the pixel columns are the same box in an image of ``width`` x ``height``."""
    x, y, w, h = box
    return [
        text_cell(file),
        text_cell(class_name),
        "" if confidence is None else f"{confidence:.4f}",  # none: drawn by a person
        *(f"{v:.6f}" for v in box),
        f"{x * width:.1f}",
        f"{y * height:.1f}",
        f"{w * width:.1f}",
        f"{h * height:.1f}",
    ]
