"""Alembic's environment, the same for every service: `shared.migrations` hands it the service's connection and
tables, and collects the revisions it applies."""

from alembic import context

from shared.migrations import render_item

config = context.config
context.configure(
    connection=config.attributes["connection"],
    target_metadata=config.attributes["metadata"],
    # Every revision runs on SQLite too, which alters a table by copying it.
    render_as_batch=True,
    render_item=render_item,
    on_version_apply=lambda step, **_: config.attributes["applied"].append(step),
)
with context.begin_transaction():
    context.run_migrations()
