"""Run the whole system: in one process (embedded) or as one process per service."""

import signal
import subprocess
import sys
import time

import click
from dramatiq import Worker

from services.market import registry
from shared import observability
from shared.settings import SERVICES, get_settings


def web_app():
    """The api and media's download app behind one WSGI callable (embedded mode only)."""
    from services.api.app import create_app as api_app
    from services.media.web import create_app as media_app

    api, media = api_app(), media_app()

    def dispatch(environ, start_response):
        path = environ.get("PATH_INFO", "")
        target = media if path.startswith("/downloads/") else api
        return target(environ, start_response)

    return dispatch


def start_embedded_workers(threads: int = 4) -> list[Worker]:
    workers = []
    for service in SERVICES:
        broker = registry.load_actors(service)
        registry.add_worker_duties(service)
        worker = Worker(broker, worker_threads=threads, worker_timeout=100)
        worker.start()
        workers.append(worker)
    return workers


def run_embedded() -> None:
    from werkzeug.serving import run_simple

    settings = get_settings()
    host, _, port = settings.api_bind.rpartition(":")
    observability.setup("embedded")
    registry.migrate_all()
    workers = start_embedded_workers()
    click.echo(f"""
Marketplace is running embedded (one process, in-memory brokers, SQLite).
  API            http://{host}:{port}   (try: curl http://{host}:{port}/products)
  Downloads      {settings.downloads_url}/<signed token>
  Databases      {settings.data_dir.resolve()}/<service>.db
  Mail (.eml)    {settings.mail_dir.resolve()}
  Stored files   {settings.storage_dir.resolve()}
Drive a demo purchase from another terminal:  .venv/bin/market demo
""")
    try:
        run_simple(host, int(port), web_app(), threaded=True, use_reloader=False)
    finally:
        for worker in workers:
            worker.stop()


def run_processes() -> None:
    """Migrate, then gunicorn for the api and media web, and one worker process per service."""
    settings = get_settings()
    me = [sys.executable, "-m", "services"]
    subprocess.run([*me, "migrate"], check=True)
    commands = [[*me, "serve", "api", "--bind", settings.api_bind],
                [*me, "serve", "media", "--bind", settings.media_bind]]
    commands += [[*me, "worker", service] for service in SERVICES]
    children = [subprocess.Popen(cmd) for cmd in commands]
    click.echo(f"Started {len(children)} processes: API on http://{settings.api_bind}, "
               f"downloads on http://{settings.media_bind}. Ctrl-C stops them all.")
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.5)
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        child.wait()
    failed = [" ".join(cmd[2:]) for cmd, child in zip(commands, children, strict=True) if child.returncode]
    if failed and not stopping:
        raise click.ClickException(f"stopped because these exited: {', '.join(failed)}")
