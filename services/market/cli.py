"""`market`: the one command line for the whole system."""

import json
import os
import sys

import click
import sqlalchemy as sa

from services.market import registry
from shared.migrations import SchemaDrift
from shared.settings import SERVICES, InsecureSecrets, get_settings, require_real_secrets

service_arg = click.argument("service", type=click.Choice(SERVICES))


@click.group()
def cli() -> None:
    """Marketplace services: API, billing, mailer, media and reports on Dramatiq."""


@cli.command()
@click.option("--bind", help="host:port of the API (default MARKET_API_BIND, 127.0.0.1:8000)")
@click.option("--port", type=click.IntRange(1, 65535), help="the API's port, on the host of --bind")
def up(bind: str | None, port: int | None) -> None:
    """Run everything: one process with no servers by default, or one process per service
    when broker URLs (MARKET_BROKER_URL, MARKET_<SERVICE>_BROKER_URL) point at RabbitMQ or Redis."""
    from services.market import runner

    if bind or port:
        host, _, default_port = (bind or get_settings().api_bind).rpartition(":")
        os.environ["MARKET_API_BIND"] = f"{host}:{port or default_port}"
        get_settings.cache_clear()
    _require_real_secrets("up")
    if get_settings().embedded:
        runner.run_embedded()
    else:
        runner.run_processes()


@cli.command()
@click.argument("service", type=click.Choice(SERVICES), required=False)
def migrate(service: str | None) -> None:
    """Upgrade every service's database (or SERVICE's) to its newest revision and say what was applied; creates
    a missing PostgreSQL database, and adopts one made before migrations when its tables are the first revision's.
    Safe to run again."""
    for name in [service] if service else SERVICES:
        click.echo(registry.migrate(name))


@cli.command()
@service_arg
@click.option("-m", "--message", required=True, help="what the revision changes, e.g. \"index emails by status\"")
def makemigration(service: str, message: str) -> None:
    """Write SERVICE's next revision from what its models declare and its revisions do not build yet. Review the
    file before committing it."""
    from shared.migrations import NothingToRevise

    try:
        path = registry.revise(service, message)
    except NothingToRevise as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {path}: review it, then `market migrate {service}`.")


@cli.command()
@click.argument("app", type=click.Choice(sorted(registry.WEB_APPS)))
@click.option("--bind", help="host:port (default MARKET_API_BIND / MARKET_MEDIA_BIND / MARKET_MAILER_BIND)")
@click.option("--workers", type=int, help="gunicorn worker processes (default MARKET_WEB_WORKERS)")
@click.option("--threads", type=click.IntRange(1), help="threads per worker process (default MARKET_WEB_THREADS)")
def serve(app: str, bind: str | None, workers: int | None, threads: int | None) -> None:
    """Serve a web app under gunicorn (threaded workers): the api, media's download app, or the mailer's queue
    metrics (GET /queues: depth and oldest wait per queue, for autoscalers)."""
    _require_real_secrets(f"{app}-web")
    settings = get_settings()
    bind = bind or getattr(settings, f"{app}_bind")
    args = ["gunicorn", "--bind", bind, "--workers", str(workers or settings.web_workers),
            # A sync worker is held by one client for as long as it takes to send its request: two clients
            # sending a byte a second stopped the api. A gthread worker gives each connection a thread.
            "--worker-class", "gthread", "--threads", str(threads or settings.web_threads),
            # Paths carry the M-Pesa callback secret and signed download tokens: this logger scrubs both logs.
            "--logger-class", "shared.observability.GunicornLogger", "--access-logfile", "-",
            "--graceful-timeout", "20", f"{registry.WEB_APPS[app]}()"]
    os.execvp(sys.executable, [sys.executable, "-m", *args])


@cli.command()
@click.argument("app", type=click.Choice(sorted(registry.WEB_APPS)))
@click.option("-o", "--output", type=click.File("w"), default="-", help="the file to write (default: standard output)")
def openapi(app: str, output) -> None:
    """Write the OpenAPI 3.1 document of the api or media's download app (also served at /openapi.json)."""
    json.dump(registry.openapi(app), output, indent=2)
    output.write("\n")


@cli.command()
@service_arg
@click.option("--processes", type=int, help="worker processes (default MARKET_WORKER_PROCESSES)")
@click.option("--threads", type=int, help="threads per process (default MARKET_WORKER_THREADS)")
def worker(service: str, processes: int | None, threads: int | None) -> None:
    """Run one Dramatiq worker for SERVICE, consuming only its own queues."""
    _require_real_secrets(f"{service}-worker")
    settings = get_settings()
    os.environ["MARKET_WORKER_SERVICE"] = service  # read by services.market.worker, in every worker process
    args = ["dramatiq", "services.market.worker", "--queues", *registry.queues(service),
            "--processes", str(processes or settings.worker_processes),
            "--threads", str(threads or settings.worker_threads),
            "--worker-shutdown-timeout", str(settings.worker_shutdown_timeout_ms),
            "--worker-fork-timeout", str(settings.worker_boot_wait_ms)]
    os.execvp(sys.executable, [sys.executable, "-m", *args])


@cli.command("worker-health")
@service_arg
@click.option("--max-age", type=click.FloatRange(0, min_open=True),
              help="seconds a heartbeat may be old (default 3 × MARKET_HEARTBEAT_INTERVAL_S)")
def worker_health(service: str, max_age: float | None) -> None:
    """Exit 0 when every SERVICE worker process on this host consumes (its consumers heard from the broker
    lately: a fresh heartbeat file), else 1 naming what is wrong. The workers' liveness and readiness probe."""
    from shared.heartbeat import health

    settings = get_settings()
    fine, sentence = health(settings.heartbeats_dir, service, max_age or 3 * settings.heartbeat_interval_s)
    if not fine:
        raise click.ClickException(sentence)
    click.echo(sentence)


@cli.command()
@click.option("--api-url", default=None, help="the running API (default http://MARKET_API_BIND)")
@click.option("--provider", type=click.Choice(["stripe", "paytm", "mpesa"]), default="stripe", show_default=True)
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for every service")
def demo(api_url: str, provider: str, timeout: float) -> None:
    """Buy a product through a correctly signed webhook and show what each service did."""
    from services.market.demo import run_demo

    run_demo((api_url or f"http://{get_settings().api_bind}").rstrip("/"), provider, timeout)


@cli.command()
@click.argument("order_id", type=int)
@click.option("--token", "buyer_token", required=True, envvar="MARKET_BUYER_TOKEN",
              help="the buyer's bearer token (or MARKET_BUYER_TOKEN)")
@click.option("--api-url", default=None, help="the running API (default http://MARKET_API_BIND)")
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for every service")
def pay(order_id: int, buyer_token: str, api_url: str | None, timeout: float) -> None:
    """Pay a pending order as its provider would (a webhook signed with this system's secret), then show what
    each service did. For development and demos: it signs with the secret in this command's environment."""
    from services.market.demo import pay as pay_order

    pay_order((api_url or f"http://{get_settings().api_bind}").rstrip("/"), order_id, buyer_token, timeout)


@cli.group()
def failed() -> None:
    """Messages that failed for good: list, retry, forget or flush them."""


@failed.command("list")
@service_arg
def failed_list(service: str) -> None:
    """List SERVICE's failed jobs, oldest first, with the last line of each error."""
    from shared import failed_jobs

    rows = failed_jobs.listing(service)
    for row in rows:
        error = row["error"].strip().splitlines()[-1] if row["error"].strip() else ""
        click.echo(f"#{row['id']}  {row['failed_at']:%Y-%m-%d %H:%M:%S}  {row['actor']}  {error}")
    click.echo(f"{len(rows)} failed job(s) in {service}.")


@failed.command("retry")
@service_arg
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="retry every failed job of SERVICE")
def failed_retry(service: str, ids: tuple[str, ...], everything: bool) -> None:
    """Send failed jobs of SERVICE again (by id, or --all) with a fresh retry budget; they leave the store."""
    from shared import failed_jobs

    if not ids and not everything:
        raise click.UsageError("name the failed job ids to retry, or pass --all")
    count = failed_jobs.retry(service, _ids(ids), everything)
    click.echo(f"Re-enqueued {count} failed job(s) of {service}.")


@failed.command("forget")
@service_arg
@click.argument("ids", nargs=-1, required=True)
def failed_forget(service: str, ids: tuple[str, ...]) -> None:
    """Delete failed jobs of SERVICE by id, without retrying them."""
    from shared import failed_jobs

    click.echo(f"Forgot {failed_jobs.forget(service, _ids(ids))} failed job(s) of {service}.")


@failed.command("flush")
@service_arg
def failed_flush(service: str) -> None:
    """Delete every failed job of SERVICE, without retrying them."""
    from shared import failed_jobs

    click.echo(f"Flushed {failed_jobs.forget(service, None)} failed job(s) of {service}.")


@cli.group()
def mail() -> None:
    """The mailer's outbound emails."""


@mail.command("status")
def mail_status() -> None:
    """Outbound emails by status, and the ambiguous sends (a worker died between the server's reply and the
    record of it): resent or held, as MARKET_AMBIGUOUS_SEND_POLICY says."""
    from services.mailer.reconcile import status

    found = status()
    for name in ("queued", "sending", "sent", "failed", "held"):
        click.echo(f"{name} {found['statuses'].get(name, 0)}")
    click.echo(f"ambiguous sends {found['ambiguous']} (policy {get_settings().ambiguous_send_policy})")
    for label, key in (("campaign recipients", "campaign_recipients"), ("invoice chunks", "invoice_chunks")):
        counts = found[key]
        click.echo(f"{label}: sending {counts.get('sending', 0)}, held {counts.get('held', 0)}, "
                   f"ambiguous sends {counts['ambiguous']}")


@mail.command("held")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
def mail_held(limit: int) -> None:
    """The sends held for an operator (MARKET_AMBIGUOUS_SEND_POLICY=hold): check each in the provider's log,
    then settle it with `market mail release`."""
    from services.mailer.reconcile import held

    rows = held(limit)
    for row in rows:
        click.echo(f"{row['id']}  {row['kind']}  to {row['to']}  {row['what']!r}  attempted {row['attempted_at']}  "
                   f"ambiguous {row['ambiguous']}")
    click.echo(f"{len(rows)} held." if rows else "Nothing is held.")


@mail.command("release")
@click.argument("held_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--sent/--resend", "went_out", default=None,
              help="--sent: it went out (the provider's log shows it), record it sent; --resend: it did not, send it "
                   "again")
def mail_release(held_ids: tuple[str, ...], went_out: bool | None) -> None:
    """Settle held sends (ids from `market mail held`) as sent, or send them again."""
    from services.mailer.reconcile import NotHeld, release

    if went_out is None:
        raise click.UsageError("say what became of it: --sent (it went out) or --resend (send it again)")
    missing = []
    for held_id in held_ids:
        try:
            click.echo(release(held_id, went_out))
        except NotHeld as exc:
            missing.append(str(exc))
    if missing:
        raise click.ClickException("not held (unknown id, or already settled): " + "; ".join(missing))


@cli.command("seed-invoices")
@click.option("--users", type=click.IntRange(1), default=1_000_000, show_default=True)
@click.option("--per-user", type=click.IntRange(1), default=3, show_default=True)
def seed_invoices(users: int, per_user: int) -> None:
    """Create customers with several invoices each in billing's database, in bulk."""
    from services.billing import runs

    registry.migrate("billing")
    runs.seed(users, per_user)


@cli.command("send-invoices")
@click.option("--chunk", type=click.IntRange(1, 10_000),
              help="invoices per message (default MARKET_INVOICE_CHUNK_SIZE)")
@click.option("--retry-failed", is_flag=True, help="send the invoices whose email failed in earlier runs")
@click.option("--no-wait", is_flag=True, help="request the emails and return without watching progress")
def send_invoices(chunk: int | None, retry_failed: bool, no_wait: bool) -> None:
    """Email the last invoice of every customer through the mailer, with live progress.
    Running it again resumes an unfinished run; an invoice already emailed is never sent again."""
    from services.billing import runs

    runs.send(chunk or get_settings().invoice_chunk_size, retry_failed, wait=not no_wait)


@cli.command()
def subscriptions() -> None:
    """Print the subscription table: which actor of which service receives each event."""
    from shared.contracts import SUBSCRIPTIONS

    click.echo(json.dumps({event: [t._asdict() for t in targets] for event, targets in SUBSCRIPTIONS.items()},
                          indent=2))


@cli.command("create-admin")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--api-url", default=None, help="a running API to check against (default http://MARKET_API_BIND)")
def create_admin(email: str, name: str, api_url: str | None) -> None:
    """Create an admin, who approves and rejects products, or make an existing user one. Writes to the api's
    database named by this command's settings; when an API is running, it must use the same database."""
    from services.api.users import create_admin as make_admin
    from services.market.demo import same_system

    same_system((api_url or f"http://{get_settings().api_bind}").rstrip("/"), required=False)
    registry.migrate("api")
    try:
        user_id, token = make_admin(email, name)
    except ValueError as exc:
        raise click.ClickException(f"cannot create an admin from --email {email!r} --name {name!r}: {exc}") from None
    click.echo(f"Admin {user_id} <{email}> (any earlier token of this user no longer works).\n"
               f"token: {token}\nKeep the token: it is shown only once.")


@cli.command("test-lead")
@click.option("--lead-id", type=int, help="the lead to announce (default: the first lead)")
@click.option("--user-id", type=int, help="the user to email (default: the first user)")
def test_lead(lead_id: int | None, user_id: int | None) -> None:
    """Publish lead.created for a stored lead, to test that its assignee gets the email."""
    from services.api.leads import announce_again
    from shared.db import transaction

    try:
        with transaction("api") as session:
            lead, user, event_id = announce_again(session, lead_id, user_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Published lead.created {event_id}: lead {lead.id} ({lead.name}) assigned to user {user.id} "
               f"<{user.email}>.")
    if get_settings().embedded:
        click.echo("The running system's outbox relay sends it to the mailer within a few seconds.")


def _require_real_secrets(process: str) -> None:
    try:
        require_real_secrets(process)
    except InsecureSecrets as refused:
        raise click.ClickException(str(refused)) from None


def _ids(ids: tuple[str, ...]) -> list[int]:
    try:
        return [int(i) for i in ids]
    except ValueError:
        raise click.BadParameter(f"failed job ids are numbers, got {' '.join(ids)}") from None


def main() -> None:
    try:
        cli(prog_name="market", standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(1) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except SchemaDrift as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        click.echo(f"Error: the database is not ready ({str(exc.orig).strip().splitlines()[0]}). "
                   "Is it running, and has `market migrate` been run?", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
