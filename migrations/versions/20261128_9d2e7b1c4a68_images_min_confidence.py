"""images keep their lowest predicted confidence for the review queue

Revision ID: 9d2e7b1c4a68
Revises: 4c1f0e9d7a52
Create Date: 2026-11-28 08:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d2e7b1c4a68"
down_revision: str | None = "4c1f0e9d7a52"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("min_confidence", sa.Double(), nullable=True))
    # Backfill from the boxes: the lowest confidence among predicted boxes (none = 0).
    op.execute(
        "UPDATE images SET min_confidence = (SELECT MIN(COALESCE(a.confidence, 0.0)) "
        "FROM annotations a WHERE a.image_id = images.id AND a.status = 'predicted')"
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index(
            "ix_images_project_id_status_min_confidence_id",
            ["project_id", "status", "min_confidence", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_project_id_status_min_confidence_id")
        batch_op.drop_column("min_confidence")
