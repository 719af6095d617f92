from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictFloat, StrictInt, field_validator

from server.kit.schemas import ReadSchema, Schema

# An ultralytics architecture file that ships with the package (no weights needed).
_YAML = r"^yolo[a-z0-9.-]{1,30}\.yaml$"
# The architectures the Train dialog offers (the server takes any name matching _YAML
# that ultralytics knows); the first is the default.
ARCHITECTURES = ("yolo11n.yaml", "yolo11s.yaml", "yolo11m.yaml", "yolo11l.yaml", "yolo11x.yaml")
# Shared by the train request and the training-data preview, so both split alike.
VAL_FRACTION_DEFAULT = 0.2
VAL_FRACTION_MAX = 0.9
SEED_MAX = 2**31 - 1
# A run that starts from a registered model holds ``base`` as "model:<id>" from the
# request's validation on: in the job's params and in the model it registers.
_MODEL_BASE = "model:"


def model_base(model_id: int) -> str:
    return f"{_MODEL_BASE}{model_id}"


def base_model_id(base: str) -> int | None:
    """The registered model a run's ``base`` names; None for an architecture file."""
    return int(base.removeprefix(_MODEL_BASE)) if base.startswith(_MODEL_BASE) else None


class TrainRequest(Schema):
    base: (
        Annotated[str, Field(min_length=1, max_length=40)]
        | Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
    ) = ARCHITECTURES[0]
    epochs: Annotated[StrictInt, Field(ge=1, le=1000)] = 50
    imgsz: Annotated[StrictInt, Field(ge=32, le=2048, multiple_of=32)] = 640
    batch: Annotated[StrictInt, Field(ge=-1, le=512)] = 16
    val_fraction: Annotated[StrictFloat, Field(ge=0, le=VAL_FRACTION_MAX)] = VAL_FRACTION_DEFAULT
    seed: Annotated[StrictInt, Field(ge=0, le=SEED_MAX)] = 0
    # Ultralytics' default; small datasets learn faster with less (its warm-up also
    # lasts at least 100 iterations).
    warmup_epochs: Annotated[StrictFloat, Field(ge=0, le=10)] = 3.0
    only_reviewed: StrictBool = True
    # Reproducible runs (the same data and seed give the same model) at some cost in
    # speed on a GPU: torch and cuDNN are held to deterministic algorithms. Off for the
    # fastest training.
    deterministic: StrictBool = True
    name: Annotated[str, Field(max_length=200)] | None = None
    pool: Annotated[str, Field(max_length=40)] | None = None

    @field_validator("base")
    @classmethod
    def _base(cls, value: str | int) -> str:
        """Clients send a model id as a number or as text; past here ``base`` has one
        shape, an architecture file or ``model_base(id)``."""
        import re

        if isinstance(value, str) and value.isascii() and value.isdigit():
            # A model id sent as text; bounded here like one sent as a number (and
            # ASCII only: "²" passes isdigit but not int).
            value = int(value)
            if not 1 <= value <= 2**63 - 1:
                raise ValueError("a model id must be between 1 and 2^63 - 1")
        elif isinstance(value, str) and not re.match(_YAML, value):
            raise ValueError("base must be an architecture like 'yolo11n.yaml' or a model id")
        return model_base(value) if isinstance(value, int) else value

    @field_validator("batch")
    @classmethod
    def _batch(cls, value: int) -> int:
        if value == 0:
            raise ValueError("batch must be -1 (auto) or at least 1")
        return value


class ClassCount(ReadSchema):
    class_id: int
    name: str
    boxes: int
    images: int = Field(description="Images holding at least one box of this class.")


class PoolChoice(ReadSchema):
    name: str
    gpu: bool
    slots: int = Field(description="Job slots of the live, non-draining workers serving it.")


class TrainingData(ReadSchema):
    """What a training run submitted now with these split parameters would learn from:
    the same selection and split as the job's dataset snapshot."""

    only_reviewed: bool
    val_fraction: float
    seed: int
    images: int
    train_images: int
    val_images: int
    boxes: int
    classes: list[ClassCount]
    problem: str | None = Field(description="Why a run would be refused or fail; null if none.")
    architectures: list[str]
    default_pool: str
    pools: list[PoolChoice]
