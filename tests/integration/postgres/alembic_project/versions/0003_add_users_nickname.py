"""add users.nickname with an index

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("nickname", sa.Text, nullable=True))
    op.create_index("users_nickname_idx", "users", ["nickname"])


def downgrade() -> None:
    op.drop_index("users_nickname_idx", table_name="users")
    op.drop_column("users", "nickname")
