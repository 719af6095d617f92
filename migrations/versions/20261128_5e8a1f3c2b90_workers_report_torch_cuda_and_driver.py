"""workers report their torch, CUDA and driver versions

Revision ID: 5e8a1f3c2b90
Revises: 9d2e7b1c4a68
Create Date: 2026-11-28 16:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e8a1f3c2b90"
down_revision: str | None = "9d2e7b1c4a68"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Nullable columns that the previous release neither reads nor writes: it runs on this
# schema (server/migrate.py, the upgrade and rollback contract).
backward_compatible = True


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("torch_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("cuda_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("driver_version", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("driver_version")
        batch_op.drop_column("cuda_version")
        batch_op.drop_column("torch_version")
