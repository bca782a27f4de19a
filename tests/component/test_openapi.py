"""The OpenAPI documents: every route is described, the documents are served and written by the CLI, and
schemathesis finds no server error and no answer that breaks the api's document."""

import json

import pytest
import schemathesis
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.market import registry, runner
from services.market.cli import cli

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
UNDOCUMENTED = {"/openapi.json", "/docs", "/docs/start.js", "/docs/static/<path:filename>"}


@pytest.mark.parametrize("app", sorted(registry.WEB_APPS))
def test_every_route_of_each_web_app_is_in_its_document(app):
    flask_app = registry.web_app(app)
    document = registry.openapi(app)
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    routes = {(_openapi_path(rule.rule), method) for rule in flask_app.url_map.iter_rules()
              if rule.rule not in UNDOCUMENTED for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert document["openapi"] == "3.1.0"
    assert routes == documented
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["summary"] and not operation["summary"].endswith(f"<{method.upper()}>"), (path, method)
            errors = [status for status in operation["responses"] if status.startswith(("4", "5"))]
            assert "503" in errors, (path, method)
            assert all(operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                       == "#/components/schemas/ErrorBody" for status in errors), (path, method)


def _openapi_path(rule: str) -> str:
    parts = rule.replace(">", "<").split("<")
    return "".join(part if i % 2 == 0 else "{" + part.split(":")[-1] + "}" for i, part in enumerate(parts))


def test_the_cli_writes_the_document_the_app_serves(system, tmp_path):
    written = tmp_path / "api.json"
    result = CliRunner().invoke(cli, ["openapi", "api", "-o", str(written)])
    assert result.exit_code == 0, result.output
    served = system.call("GET", "/openapi.json")
    assert served.status_code == 200 and json.loads(written.read_text()) == served.json
    assert len(served.json["paths"]) >= 25


def test_the_docs_page_loads_swagger_ui_from_this_server(system):
    page = system.call("GET", "/docs")
    assert page.status_code == 200 and b"/docs/static/swagger-ui-bundle.js" in page.data
    assert "script-src" not in page.headers["Content-Security-Policy"]  # 'self' only: no inline script
    script = system.call("GET", "/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.data) > 100_000
    assert b"/openapi.json" in system.call("GET", "/docs/start.js").data


OPERATIONS = [(method.upper(), path) for path, item in registry.openapi("api")["paths"].items() for method in item]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_api_answers_as_its_document_says(method, path, system):
    """Up to 30 generated requests per operation, valid and invalid ones, as a signed-in admin (so admin-only
    operations can succeed): no server error, and every answer's status, content type and body as the document
    says."""
    token = system.admin()
    operation = schemathesis.openapi.from_wsgi("/openapi.json", runner.web_app())[path][method]

    cases = st.one_of(*(operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

    @given(case=cases)
    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def answers_as_documented(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    answers_as_documented()
