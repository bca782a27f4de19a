"""Outside the embedded mode a process refuses the secrets that are in the repository."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from services.market import cli
from shared import settings as settings_module
from shared.settings import InsecureSecrets, get_settings, require_real_secrets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Nothing listens on port 1: a process that got past the check would fail to connect, not hang on a server.
SERVERS = {"MARKET_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
           "MARKET_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/market_{service}"}
REAL = {"MARKET_STRIPE_WEBHOOK_SECRET": "whsec_Jq3vXn8R2kLp0sYt7WbZc4HdFm9gAe6U",
        "MARKET_PAYTM_MERCHANT_KEY": "Kx7#pQ2z!mW9vL4s",
        "MARKET_MPESA_CALLBACK_SECRET": "b2VHn0c3Qm1sYXBqZ3d4cXk4dHJ6bWw",
        "MARKET_MEDIA_SIGNING_SECRET": "Zr8s1nE2qW5tY7uI9oP3aS6dF4gH0jKl"}


@pytest.fixture
def servers(monkeypatch):
    """Settings as in production: real broker and database URLs, real secrets unless a test says otherwise."""
    for name, value in {**SERVERS, **REAL}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def use(monkeypatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()


BAD = [
    ("api-web", "MARKET_STRIPE_WEBHOOK_SECRET", ""),
    ("api-web", "MARKET_STRIPE_WEBHOOK_SECRET", "whsec_dev_only_change_me"),  # the repository's default
    ("api-web", "MARKET_STRIPE_WEBHOOK_SECRET", "whsec_dev"),  # the old compose fallback
    ("api-web", "MARKET_STRIPE_WEBHOOK_SECRET", "whsec_short"),
    ("api-web", "MARKET_STRIPE_WEBHOOK_SECRET", "replace-me-with-the-endpoint-secret-from-stripe"),
    ("api-web", "MARKET_PAYTM_MERCHANT_KEY", ""),
    ("api-web", "MARKET_PAYTM_MERCHANT_KEY", "devkey_16bytes!!"),
    ("api-web", "MARKET_PAYTM_MERCHANT_KEY", "dev_paytm_key_16"),
    ("api-web", "MARKET_PAYTM_MERCHANT_KEY", "a-17-byte-key-xyz"),  # AES takes 16, 24 or 32 bytes
    ("api-web", "MARKET_MPESA_CALLBACK_SECRET", "dev-mpesa-secret"),
    ("api-web", "MARKET_MPESA_CALLBACK_SECRET", "mpesa_dev_secret"),
    ("api-web", "MARKET_MPESA_CALLBACK_SECRET", "   "),
    ("media-web", "MARKET_MEDIA_SIGNING_SECRET", "dev-media-secret-change-me"),
    ("media-web", "MARKET_MEDIA_SIGNING_SECRET", "media_dev_signing_secret"),
    ("media-worker", "MARKET_MEDIA_SIGNING_SECRET", ""),
    ("media-worker", "MARKET_MEDIA_SIGNING_SECRET", "tooshort"),
    ("up", "MARKET_MPESA_CALLBACK_SECRET", "dev-mpesa-secret"),
    ("up", "MARKET_MEDIA_SIGNING_SECRET", "dev-media-secret-change-me"),
]


@pytest.mark.parametrize(("process", "variable", "value"), BAD)
def test_a_process_outside_the_embedded_mode_refuses_a_development_or_weak_secret(servers, process, variable, value):
    use(servers, variable, value)
    with pytest.raises(InsecureSecrets) as refused:
        require_real_secrets(process)
    assert variable in str(refused.value)
    assert "secrets.token_urlsafe(32)" in str(refused.value)
    assert [name for name in REAL if name in str(refused.value)] == [variable]  # only the bad one is named


def test_every_bad_secret_is_named_at_once(servers):
    for variable in REAL:
        use(servers, variable, "")
    with pytest.raises(InsecureSecrets) as refused:
        require_real_secrets("up")
    assert all(variable in str(refused.value) for variable in REAL)


@pytest.mark.parametrize("process", ["api-web", "media-web", "media-worker", "api-worker", "billing-worker",
                                     "mailer-worker", "reports-worker", "up"])
def test_real_looking_secrets_are_accepted(servers, process):
    require_real_secrets(process)


@pytest.mark.parametrize("key", ["Kx7#pQ2z!mW9vL4s", "Kx7#pQ2z!mW9vL4sT5@rN8&e", "Kx7#pQ2z!mW9vL4sT5@rN8&eB1%yH6^c"])
def test_a_paytm_key_of_any_aes_length_is_accepted(servers, key):
    use(servers, "MARKET_PAYTM_MERCHANT_KEY", key)
    require_real_secrets("api-web")


def test_a_worker_that_signs_nothing_needs_no_secret(servers):
    use(servers, "MARKET_MEDIA_SIGNING_SECRET", "")
    use(servers, "MARKET_STRIPE_WEBHOOK_SECRET", "")
    for process in ("api-worker", "billing-worker", "mailer-worker", "reports-worker"):
        require_real_secrets(process)


def test_the_embedded_mode_runs_with_the_development_values(monkeypatch):
    for variable in REAL:
        monkeypatch.delenv(variable, raising=False)
    get_settings.cache_clear()
    try:
        assert get_settings().embedded
        assert get_settings().stripe_webhook_secret in settings_module.DEVELOPMENT_SECRETS
        for process in ("api-web", "media-web", "media-worker", "up"):
            require_real_secrets(process)
    finally:
        get_settings.cache_clear()


def test_the_web_app_factories_refuse_development_secrets(servers):
    from services.api.app import create_app as api_app
    from services.media.web import create_app as media_app

    use(servers, "MARKET_STRIPE_WEBHOOK_SECRET", "whsec_dev")
    use(servers, "MARKET_MEDIA_SIGNING_SECRET", "media_dev_signing_secret")
    with pytest.raises(InsecureSecrets, match="MARKET_STRIPE_WEBHOOK_SECRET"):
        api_app()
    with pytest.raises(InsecureSecrets, match="MARKET_MEDIA_SIGNING_SECRET"):
        media_app()


@pytest.mark.parametrize(("argv", "variable"), [
    (["serve", "api"], "MARKET_PAYTM_MERCHANT_KEY"),
    (["serve", "media"], "MARKET_MEDIA_SIGNING_SECRET"),
    (["worker", "media"], "MARKET_MEDIA_SIGNING_SECRET"),
    (["up"], "MARKET_PAYTM_MERCHANT_KEY"),
])
def test_the_commands_that_start_processes_refuse_before_starting_anything(servers, argv, variable):
    use(servers, "MARKET_PAYTM_MERCHANT_KEY", "dev_paytm_key_16")
    use(servers, "MARKET_MEDIA_SIGNING_SECRET", "dev-media-secret-change-me")
    started = []
    servers.setattr(os, "execvp", lambda *args: started.append(args))
    servers.setattr(subprocess, "run", lambda *args, **kw: started.append(args))
    result = CliRunner().invoke(cli.cli, argv)
    assert result.exit_code == 1, result.output
    assert variable in result.output
    assert "Traceback" not in result.output
    assert started == []


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    return subprocess.run(argv, env={**clean, **SERVERS, **REAL, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("argv", "variable", "value"), [
    (["serve", "api"], "MARKET_STRIPE_WEBHOOK_SECRET", "whsec_dev_only_change_me"),
    (["serve", "media"], "MARKET_MEDIA_SIGNING_SECRET", "media_dev_signing_secret"),
    (["worker", "media"], "MARKET_MEDIA_SIGNING_SECRET", ""),
    (["up"], "MARKET_MPESA_CALLBACK_SECRET", "mpesa_dev_secret"),
])
def test_market_exits_non_zero_naming_the_variable(tmp_path, argv, variable, value):
    done = _run([sys.executable, "-m", "services", *argv], **{variable: value, "MARKET_DATA_DIR": str(tmp_path)})
    assert done.returncode != 0
    assert variable in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_worker_started_by_dramatiq_itself_exits_naming_the_variable(tmp_path):
    done = _run([sys.executable, "-m", "dramatiq", "services.market.worker", "--processes", "1", "--threads", "1"],
                MARKET_MEDIA_SIGNING_SECRET="dev-media-secret-change-me", MARKET_DATA_DIR=str(tmp_path),
                MARKET_WORKER_SERVICE="media")
    assert done.returncode != 0
    assert "MARKET_MEDIA_SIGNING_SECRET" in done.stdout + done.stderr


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "192.0.2.10:8000", "[::]:8000"])
def test_the_embedded_mode_on_an_address_others_can_reach_refuses_development_secrets(monkeypatch, bind):
    use(monkeypatch, "MARKET_API_BIND", bind)

    assert get_settings().embedded
    with pytest.raises(InsecureSecrets, match="MARKET_STRIPE_WEBHOOK_SECRET"):
        require_real_secrets("up")
    get_settings.cache_clear()


def test_market_up_embedded_on_all_interfaces_exits_naming_the_secrets(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")} | {"MARKET_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "services", "up", "--bind", "0.0.0.0:1"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "MARKET_MEDIA_SIGNING_SECRET" in done.stderr and "Traceback" not in done.stderr
