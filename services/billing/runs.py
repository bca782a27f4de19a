"""`market seed-invoices` and `market send-invoices`: the seed-000 run, with live progress."""

import sys
import time
from collections import deque

import click

from services.billing import invoices
from shared.settings import get_settings


def seed(users: int, per_user: int) -> None:
    started = time.perf_counter()
    invoices.seed(users, per_user)
    elapsed = time.perf_counter() - started
    click.echo(f"Seeded {users:,} customers with {users * per_user:,} invoices in {elapsed:.1f} s "
               f"({users * per_user / elapsed:,.0f} invoices/s).")


def send(chunk_size: int, retry_failed: bool, wait: bool) -> None:
    run = invoices.unfinished_run()
    if run is not None:
        click.echo(f"Resuming run {run.id}: {run.sent + run.failed:,} of {run.total:,} done.")
    else:
        run = invoices.start_run(chunk_size, retry_failed)
        if run is None:
            what = "failed invoice emails to retry" if retry_failed else "invoices left to email"
            click.echo(f"Nothing to send: no {what}.")
            return
        click.echo(f"Run {run.id}: the last invoice of {run.total:,} customers, in {run.chunks:,} chunks.")
    requested = 0
    for requested in invoices.request_chunks(run):
        _line(f"Requested {requested:,} chunks from the mailer")
    _line(f"Requested {requested:,} chunks from the mailer (those not reported done yet)", end=True)
    if wait:
        watch(run.id)


def watch(run_id: str, stall_warning_s: float = 60) -> None:
    """Print sent, failed, rate and ETA until the run is done; Ctrl-C leaves it running."""
    samples: deque[tuple[float, int]] = deque(maxlen=20)
    started = last_change = time.monotonic()
    try:
        while True:
            run = invoices.progress(run_id)
            assert run is not None  # the run `send` started (runs are never deleted)
            done, now = run.sent + run.failed, time.monotonic()
            if samples and done != samples[-1][1]:
                last_change = now
            samples.append((now, done))
            rate = (done - samples[0][1]) / (now - samples[0][0]) if now > samples[0][0] else 0.0
            eta = f"{(run.total - done) / rate:,.0f} s" if rate > 0 else "?"
            _line(f"sent {run.sent:,}  failed {run.failed:,}  of {run.total:,} ({done / run.total:.1%})  "
                  f"{rate:,.0f}/s  ETA {eta}", end=run.finished_at is not None)
            if run.finished_at is not None:
                break
            if now - last_change > stall_warning_s:
                _line(f"No progress for {now - last_change:.0f} s: is the system running (python3 dev.py run, "
                      "or the billing and mailer workers)?", end=True)
                last_change = now
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("\nThe run goes on in the background; `market send-invoices` shows it again.")
        return
    elapsed = time.monotonic() - started
    folder = get_settings().storage_dir.resolve() / "emails" / run_id
    click.echo(f"Done: {run.sent:,} sent, {run.failed:,} failed, {elapsed:.1f} s watching "
               f"({run.total / max(elapsed, 1e-9):,.0f} emails/s). Summary files: {folder}")
    if run.failed:
        click.echo("Retry the failures with: market send-invoices --retry-failed")


def _line(text: str, end: bool = False) -> None:
    """One status line, rewritten in place on a terminal, printed as is elsewhere."""
    if sys.stdout.isatty():
        click.echo(f"\r\033[K{text}", nl=end)
    elif end or int(time.monotonic()) % 5 == 0:
        click.echo(text)
