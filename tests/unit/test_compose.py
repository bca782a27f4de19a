"""Offline checks of the local stack in compose/docker-compose.yml.

No Docker engine is needed: the file is validated against the compose-spec JSON schema that
check-jsonschema ships, and every ``market ...`` command in it is resolved through the real click
group (``services.market.cli.cli``) without being run.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.core import ParameterSource
from ruamel.yaml import YAML  # a dependency of check-jsonschema

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

SERVICES = ("api", "billing", "mailer", "media", "reports")
WORKERS = tuple(f"worker-{service}" for service in SERVICES)
APP_CONTAINERS = ("migrate", "api", "media-web", *WORKERS)
WORKER_SHUTDOWN_TIMEOUT_S = 25
MIN_STOP_GRACE_PERIOD_S = 30
NEEDS_HEALTHCHECK = ("postgres", "rabbitmq", "redis", "api")
PUBLISHED_PORTS = {"api": {8000}, "media-web": {8001}, "mailpit": {8025}, "rabbitmq": {15672}}


# --------------------------------------------------------------------------- helpers


@functools.cache
def load_compose() -> dict[str, Any]:
    # The safe loader resolves the `<<: *app` merge keys just like Compose does.
    return YAML(typ="safe", pure=True).load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def app_image() -> str:
    return load_compose()["x-app"]["image"]


def app_services() -> dict[str, dict[str, Any]]:
    """The containers that run the project's own image."""
    return {name: svc for name, svc in services().items() if svc.get("image") == app_image()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short syntax means condition: service_started
        return {name: {"condition": "service_started"} for name in deps}
    return deps


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|h|m|s)")
_SECONDS_PER_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def duration_seconds(value: str) -> float:
    """Compose duration ("30s", "1m30s", "500ms") in seconds."""
    parts = _DURATION_PART.findall(str(value))
    if not parts or "".join(number + unit for number, unit in parts) != str(value):
        raise ValueError(f"not a Compose duration: {value!r}")
    return sum(float(number) * _SECONDS_PER_UNIT[unit] for number, unit in parts)


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:  # "[ip:][host:]container[/proto]"
            ports.add(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    return ports


class CommandNotInCli(AssertionError):
    """A compose command that `market` would reject."""


def resolve_market_command(cli: click.Command, argv: list[str]) -> list[str]:
    """Walk ``market <argv>`` through the click group the way click would, without invoking it.

    Contexts are made with ``resilient_parsing=True`` (no callbacks, prompts or exits); since that
    mode swallows errors, they are checked explicitly: unknown commands, unknown options,
    unexpected extra arguments, missing required parameters and values the parameter type rejects
    all raise CommandNotInCli. Returns the resolved command path, e.g. ``["market", "worker"]``.
    """
    command, name, args, parent = cli, "market", list(argv), None
    path: list[str] = []
    while True:
        ctx = command.make_context(name, list(args), parent=parent, resilient_parsing=True)
        path.append(name)
        where = " ".join(path)

        # Re-parse the tokens strictly (parsing only: no type conversion, no callbacks).
        parser = command.make_parser(ctx)
        ctx.resilient_parsing = False
        try:
            _opts, leftover, _order = parser.parse_args(list(args))
        except click.UsageError as exc:
            raise CommandNotInCli(f"`{where}` rejects {args}: {exc.format_message()}") from None
        finally:
            ctx.resilient_parsing = True

        for param in command.get_params(ctx):
            if not param.expose_value or param.name is None:
                continue
            value = ctx.params.get(param.name)
            if value is None and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
                raise CommandNotInCli(f"`{where}` rejects the value given for {param.human_readable_name}")
            if value is None and param.required:
                raise CommandNotInCli(f"`{where}` is missing {param.human_readable_name}")

        if not isinstance(command, click.Group):
            if leftover and not ctx.allow_extra_args:
                raise CommandNotInCli(f"`{where}` got unexpected extra arguments {leftover}")
            return path

        remaining = [*ctx._protected_args, *ctx.args]  # what Group.invoke hands to resolve_command
        if not remaining:
            if command.invoke_without_command:
                return path
            raise CommandNotInCli(f"`{where}` needs a subcommand, one of {command.list_commands(ctx)}")
        sub_name, sub_command, rest = command.resolve_command(ctx, remaining)
        if sub_command is None or sub_name is None:
            raise CommandNotInCli(f"`{where}` has no command {remaining[0]!r}; it has {command.list_commands(ctx)}")
        command, name, args, parent = sub_command, sub_name, rest, ctx


@pytest.fixture(scope="module")
def market_cli() -> click.Group:
    from services.market.cli import cli

    return cli


# ------------------------------------------------------------- schema and image


def test_the_compose_file_is_valid_against_the_compose_spec_schema():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_app_container_runs_the_one_image_built_from_the_repository_root():
    assert set(app_services()) == set(APP_CONTAINERS)
    for name, service in app_services().items():
        build = service["build"]
        context = build if isinstance(build, str) else build["context"]
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (COMPOSE_DIR / context).resolve() == ROOT, name
        assert (COMPOSE_DIR / context / dockerfile).resolve() == DOCKERFILE, name


def test_the_image_is_python_3_11_slim_and_runs_as_a_non_root_user():
    instructions = [
        line.split(None, 1)
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [args.split()[0] for keyword, *rest in instructions if keyword.upper() == "FROM" for args in rest]
    users = [args.strip() for keyword, *rest in instructions if keyword.upper() == "USER" for args in rest]
    assert froms and froms[-1] == "python:3.11-slim"
    assert users, "the Dockerfile never switches away from root"
    assert users[-1].split(":")[0] not in {"root", "0"}


# ------------------------------------------------------------------- commands


def test_every_app_command_is_a_market_argv_list():
    for name, service in app_services().items():
        command = service.get("command")
        assert isinstance(command, list), f"{name}: command must be an exec-form list"
        assert all(isinstance(arg, str) for arg in command), name
        assert command[0] == "market", name


@pytest.mark.parametrize("container", APP_CONTAINERS)
def test_every_app_command_exists_in_the_cli(market_cli, container):
    command = services()[container]["command"]
    resolve_market_command(market_cli, command[1:])


def test_there_is_one_worker_container_per_service_running_that_services_worker(market_cli):
    for service in SERVICES:
        worker = services().get(f"worker-{service}")
        assert worker is not None, f"worker-{service} is missing"
        assert worker["command"] == ["market", "worker", service]
        assert resolve_market_command(market_cli, worker["command"][1:]) == ["market", "worker"]


def test_the_web_apps_bind_the_ports_they_publish_and_probe():
    for name, port in (("api", 8000), ("media-web", 8001)):
        command = services()[name]["command"]
        assert command[command.index("--bind") + 1] == f"0.0.0.0:{port}", name
        assert container_ports(services()[name]) == {port}, name
        probe = " ".join(services()[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/readyz" in probe, name  # ready: its database and brokers answer


def test_the_broker_redis_keeps_an_append_only_file_synced_every_second():
    # Without one a Redis restart loses every queued mail (the workers also refuse such a Redis).
    command = services()["redis"]["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert any(str(volume).split(":")[1] == "/data" for volume in services()["redis"]["volumes"])


# --------------------------------------------------------- the resolver itself


@click.group()
def toy_cli():
    """A stand-in for `market`, to show the resolver rejects what click would."""


@toy_cli.command()
@click.argument("service", type=click.Choice(["api", "billing"]))
def worker(service):
    raise AssertionError("resolving a command must not run it")


@toy_cli.group()
def serve():
    pass


@serve.command("api")
@click.option("--bind", required=True)
def serve_api(bind):
    raise AssertionError("resolving a command must not run it")


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["worker", "api"], ["market", "worker"]),
        (["serve", "api", "--bind", "0.0.0.0:8000"], ["market", "serve", "api"]),
    ],
)
def test_the_command_resolver_accepts_real_commands_without_running_them(argv, path):
    assert resolve_market_command(toy_cli, argv) == path


@pytest.mark.parametrize(
    "argv",
    [
        ["wroker", "api"],  # unknown command
        ["worker", "payments"],  # value the parameter type rejects
        ["worker"],  # missing argument
        ["worker", "api", "extra"],  # unexpected extra argument
        ["worker", "--threads", "8", "api"],  # unknown option
        ["serve"],  # group without a subcommand
        ["serve", "web", "--bind", "0.0.0.0:8000"],  # unknown subcommand
        ["serve", "api"],  # missing required option
        ["serve", "api", "--bind"],  # option without its value
        ["serve", "api", "--bnid", "0.0.0.0:8000"],  # misspelt option
    ],
)
def test_the_command_resolver_rejects_what_market_would_reject(argv):
    with pytest.raises(CommandNotInCli):
        resolve_market_command(toy_cli, argv)


# ------------------------------------------------------- ordering and shutdown


@pytest.mark.parametrize("container", WORKERS)
def test_every_worker_gets_more_time_to_stop_than_its_shutdown_timeout(container):
    worker = services()[container]
    grace = duration_seconds(worker["stop_grace_period"])
    assert grace >= MIN_STOP_GRACE_PERIOD_S
    assert grace > WORKER_SHUTDOWN_TIMEOUT_S
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"


@pytest.mark.parametrize("container", WORKERS)
def test_every_worker_can_be_scaled(container):
    worker = services()[container]
    assert "container_name" not in worker
    assert not worker.get("ports")


def test_every_app_service_waits_for_migrate_to_complete():
    for name, service in app_services().items():
        if name == "migrate":
            continue
        assert depends_on(service).get("migrate", {}).get("condition") == "service_completed_successfully", name


def test_every_app_service_waits_for_healthy_brokers():
    for name, service in app_services().items():
        if name == "migrate":
            continue
        for broker in ("rabbitmq", "redis"):
            assert depends_on(service).get(broker, {}).get("condition") == "service_healthy", (name, broker)


def test_migrate_is_a_one_shot_that_waits_for_a_healthy_postgres():
    migrate = services()["migrate"]
    assert migrate["command"] == ["market", "migrate"]
    assert migrate["restart"] == "no"
    assert depends_on(migrate)["postgres"]["condition"] == "service_healthy"


def test_every_depends_on_target_exists_and_is_healthchecked_when_waited_for_healthy():
    for name, service in services().items():
        for target, spec in depends_on(service).items():
            assert target in services(), f"{name} depends on unknown service {target}"
            if spec.get("condition") == "service_healthy":
                assert services()[target].get("healthcheck"), f"{name} waits for {target} to be healthy"


@pytest.mark.parametrize("name", NEEDS_HEALTHCHECK)
def test_postgres_rabbitmq_redis_and_api_have_healthchecks(name):
    healthcheck = services()[name].get("healthcheck") or {}
    assert healthcheck.get("test"), name
    assert not healthcheck.get("disable"), name


def test_only_the_documented_ports_are_published():
    published = {name: container_ports(service) for name, service in services().items()}
    assert {name: ports for name, ports in published.items() if ports} == PUBLISHED_PORTS


# ---------------------------------------------------------------- configuration


def test_app_containers_share_the_data_volume_at_market_data_dir():
    for name, service in app_services().items():
        data_dir = service["environment"]["MARKET_DATA_DIR"]
        volumes = [str(volume) for volume in service.get("volumes", [])]
        mounted = [volume for volume in volumes if volume.split(":")[1:2] == [data_dir]]
        assert mounted, f"{name} does not mount anything at {data_dir}"
        assert mounted[0].split(":")[0] in load_compose()["volumes"], f"{name}: {data_dir} is not a named volume"


def test_the_mailer_sits_on_redis_while_the_other_services_use_rabbitmq():
    for name, service in app_services().items():
        environment = service["environment"]
        assert environment["MARKET_BROKER_URL"].startswith("amqp://"), name
        assert environment["MARKET_MAILER_BROKER_URL"].startswith("redis://"), name


def test_the_postgres_init_script_creates_every_service_database():
    postgres = services()["postgres"]
    mounts = [str(volume).split(":") for volume in postgres["volumes"]]
    init_scripts = [
        COMPOSE_DIR / source
        for source, target, *_ in mounts
        if source.startswith(".") and target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert init_scripts, "no init script is mounted into /docker-entrypoint-initdb.d"
    created = set()
    for script in init_scripts:
        created |= set(re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)\"?", script.read_text(), re.IGNORECASE))

    for name, service in app_services().items():
        environment = service["environment"]
        template = environment["MARKET_DATABASE_URL"]
        assert "{service}" in template, name
        for svc in SERVICES:
            url = environment.get(f"MARKET_{svc.upper()}_DATABASE_URL") or template.replace("{service}", svc)
            database = url.rsplit("/", 1)[1].split("?")[0]
            assert database in created, f"{name}: {svc} uses database {database!r}, never created"


# ---------------------------------------------------------------------- secrets

SECRETS = ("MARKET_STRIPE_WEBHOOK_SECRET", "MARKET_PAYTM_MERCHANT_KEY", "MARKET_MPESA_CALLBACK_SECRET",
           "MARKET_MEDIA_SIGNING_SECRET")
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
_SUBSTITUTION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    """Compose stops with this when a `${NAME:?message}` variable is unset or empty."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`, `${NAME?message}`."""
    def substitute(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    return _SUBSTITUTION.sub(substitute, text)


def env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines of a compose .env file (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


@pytest.mark.parametrize("variable", SECRETS)
def test_every_secret_must_come_from_the_environment_with_no_fallback(variable):
    value = load_compose()["x-app"]["environment"][variable]
    match = _SUBSTITUTION.fullmatch(value)
    assert match and match["name"] == variable and match["op"] == ":?", f"{variable}: {value!r}"
    assert "compose/.env" in match["arg"], "the message says where to set it"


def test_the_compose_file_names_no_development_secret():
    from shared.settings import DEVELOPMENT_SECRETS

    text = COMPOSE_FILE.read_text()
    assert [secret for secret in DEVELOPMENT_SECRETS if secret in text] == []


def test_compose_refuses_to_render_without_the_secrets_and_renders_with_them():
    text = COMPOSE_FILE.read_text()
    with pytest.raises(MissingVariable, match="MARKET_STRIPE_WEBHOOK_SECRET"):
        interpolate(text, env_file(ENV_EXAMPLE))  # the example as shipped: secrets left empty
    filled = {name: f"value-of-{name}" for name in SECRETS}
    rendered = YAML(typ="safe", pure=True).load(interpolate(text, {**env_file(ENV_EXAMPLE), **filled}))
    for name, service in rendered["services"].items():
        if service.get("image") == app_image():
            assert {k: service["environment"][k] for k in SECRETS} == filled, name


def test_the_env_example_lists_every_variable_compose_requires_and_nothing_filled_in():
    required = {m["name"] for m in _SUBSTITUTION.finditer(COMPOSE_FILE.read_text()) if m["op"] in (":?", "?")}
    example = env_file(ENV_EXAMPLE)
    assert required == set(SECRETS)
    assert required <= set(example)
    assert all(example[name] == "" for name in required), "the example must not carry a usable secret"
    assert 'secrets.token_urlsafe(32)' in ENV_EXAMPLE.read_text()
