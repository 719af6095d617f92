from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, field_validator

from server.kit.schemas import Schema

# csv: one row per box (file, class, confidence, box normalised and in pixels), no images.
ExportFormat = Literal["yolo", "coco", "csv"]


class ExportRequest(Schema):
    format: ExportFormat
    only_reviewed: StrictBool = Field(
        default=False,
        description="Only reviewed images and their accepted boxes; otherwise every image, "
        "with accepted and predicted boxes. Rejected boxes are never exported.",
    )
    val_fraction: Annotated[StrictFloat, Field(ge=0.0, le=0.9)] = Field(
        default=0.0,
        description="0 keeps each image's stored split (none means train); above 0 splits "
        "train/val by a hash of (seed, image sha256), the same every time.",
    )
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] = 0


class Issue(BaseModel):
    """One thing in the zip that was not imported (or not entirely), and why."""

    file: str
    line: int | None = None
    reason: str

    @field_validator("file", "reason")
    @classmethod
    def _storable(cls, value: str) -> str:
        # Quoted from the zip; PostgreSQL's JSONB cannot hold NUL characters.
        return value.replace("\x00", "\ufffd")[:1000]


class ImportCounts(BaseModel):
    images_created: int = 0
    images_duplicate: int = 0
    images_rejected: int = 0
    images_labelled: int = 0
    images_kept_existing: int = 0
    boxes_imported: int = 0
    labels_skipped: int = 0


class ImportReport(BaseModel):
    format: Literal["yolo", "coco"]
    filename: str
    classes_added: list[str]
    counts: ImportCounts
    issues: list[Issue]
    issues_total: int
    issues_truncated: bool


class ExportReport(BaseModel):
    format: ExportFormat
    images: int
    boxes: int
    splits: dict[str, int]
    missing_files: list[int] = Field(description="ids of images whose file was missing")
    zip_bytes: int = Field(description="size of the download: the zip, or the csv file")
