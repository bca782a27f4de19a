"""Index outbound messages by status: the sweep looks for the few queued and sending rows every minute, and
`market mail held` for the held ones, among every email ever sent.

Created 2026-12-03.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbound_messages_status", "outbound_messages", ["status"])


def downgrade() -> None:
    op.drop_index("ix_outbound_messages_status", table_name="outbound_messages")
