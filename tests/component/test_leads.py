"""Leads: stored at once, announced to the assigned user by email, whatever happens to the mail."""

import json
import re

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from services.mailer import actors as mailer_actors
from services.market.cli import cli
from shared.db import transaction
from shared.outbox import relay


def lead_body(**changes) -> dict:
    return {"name": "Lena Lead", "email": "lena@example.com", "phone": "+254 712 345 678", "source": "webinar"} \
        | changes


def product_of(system, seller: dict) -> int:
    """An approved product of `seller`, with the approval's email put away."""
    product = system.call("POST", "/products", {"title": "Guide", "price_minor": 100, "currency": "USD"},
                          seller["token"]).json
    system.approve(product["id"])
    system.settle()
    return product["id"]


def create_lead(system, creator: dict, assignee: dict, **changes):
    """A lead about a product of `assignee`, sent by `creator`."""
    body = lead_body(product_id=product_of(system, assignee), **changes)
    return system.call("POST", "/leads", body, creator["token"])


def fields(response) -> set[str]:
    return {d["field"] for d in response.json.get("details", [])}


def text_of(mail) -> str:
    return mail.get_body(("plain",)).get_content()


class BrokenSender:
    """A mail transport that fails every send."""

    def send_many(self, messages):
        raise RuntimeError("the mail transport is broken")


# --- POST /leads --------------------------------------------------------------------------------

def test_a_new_lead_is_answered_201_at_once_and_its_assignee_gets_exactly_one_email_naming_it(system):
    creator, assignee = system.user("creator"), system.user("agent")

    response = create_lead(system, creator, assignee)
    assert response.status_code == 201
    lead = response.json
    assert lead | {"id": None, "created_at": None} == {
        "id": None, "name": "Lena Lead", "email": "lena@example.com", "phone": "+254 712 345 678",
        "source": "webinar", "product_id": lead["product_id"], "assigned_user_id": assignee["id"], "created_at": None}
    [announced] = system.rows("api", "SELECT actor FROM outbox")
    assert announced["actor"] == "mailer.on_lead_created"

    system.drain()
    [mail] = system.mails()
    assert mail["To"] == "agent@example.com"
    assert mail["Subject"] == "New lead assigned to you: Lena Lead"
    assert "Lena Lead" in text_of(mail) and "lena@example.com" in text_of(mail) and "webinar" in text_of(mail)
    assert system.call("GET", f"/leads/{lead['id']}", token=creator["token"]).json == lead


def test_a_lead_is_stored_and_answered_201_even_when_the_mail_transport_is_broken(system, monkeypatch):
    creator, assignee = system.user("creator"), system.user("agent")
    product_id = product_of(system, assignee)
    monkeypatch.setattr(mailer_actors, "sender_from", lambda settings: BrokenSender())
    # Fail for good on the first error instead of retrying with a 10 s backoff.
    monkeypatch.setitem(mailer_actors.deliver_message.options, "max_retries", 0)

    response = system.call("POST", "/leads", lead_body(product_id=product_id), creator["token"])
    system.drain(fail_fast=False)

    assert response.status_code == 201
    assert system.call("GET", f"/leads/{response.json['id']}", token=assignee["token"]).json == response.json
    assert [r["name"] for r in system.rows("api", "SELECT name FROM leads")] == ["Lena Lead"]
    assert system.mails() == []
    assert system.rows("mailer", "SELECT status FROM outbound_messages WHERE subject LIKE 'New lead%'") == [
        {"status": "queued"}]
    assert system.rows("mailer", "SELECT actor FROM failed_jobs") == [{"actor": "mailer.deliver_message"}]


@pytest.mark.parametrize(("change", "field"), [
    ({"name": ""}, "name"), ({"name": "   "}, "name"), ({"email": "not-an-email"}, "email"),
    ({"phone": "call me"}, "phone"), ({"source": "x" * 65}, "source"), ({"assigned_user_id": "someone"},
                                                                        "assigned_user_id")])
def test_a_lead_with_an_invalid_field_is_refused_with_400_naming_it(system, change, field):
    creator = system.user("creator")

    response = create_lead(system, creator, creator, **change)
    assert response.status_code == 400 and fields(response) == {field}
    assert system.rows("api", "SELECT * FROM leads") == [] and system.rows("api", "SELECT * FROM outbox") == []


def test_a_lead_about_no_product_and_no_assignee_is_refused_with_400_saying_what_to_give(system):
    creator = system.user("creator")

    response = system.call("POST", "/leads", lead_body(), creator["token"])
    assert response.status_code == 400 and "product_id" in response.json["details"][0]["problem"]


def test_only_an_admin_assigns_a_lead_to_a_user_so_nobody_else_can_email_or_probe_user_ids(system):
    creator, someone = system.user("creator"), system.user("someone")

    for user_id in (someone["id"], 999999):
        response = system.call("POST", "/leads", lead_body(assigned_user_id=user_id), creator["token"])
        assert response.status_code == 403 and "admin" in response.json["error"]
    by_admin = system.call("POST", "/leads", lead_body(assigned_user_id=someone["id"]), system.admin())
    assert by_admin.status_code == 201 and by_admin.json["assigned_user_id"] == someone["id"]
    assert len(system.rows("api", "SELECT * FROM leads")) == 1


def test_a_lead_about_a_product_not_for_sale_is_a_404_like_a_missing_one(system):
    creator, seller = system.user("creator"), system.user("seller")
    pending = system.call("POST", "/products", {"title": "Draft", "price_minor": 100, "currency": "USD"},
                          seller["token"]).json

    for product_id in (pending["id"], 999999):
        response = system.call("POST", "/leads", lead_body(product_id=product_id), creator["token"])
        assert response.status_code == 404
    assert system.rows("api", "SELECT * FROM leads") == [] and system.rows("api", "SELECT * FROM outbox") == []


def test_a_lead_assigned_to_a_user_who_does_not_exist_is_refused_with_400_naming_assigned_user_id(system):
    response = system.call("POST", "/leads", lead_body(assigned_user_id=999999), system.admin())
    assert response.status_code == 400 and fields(response) == {"assigned_user_id"}
    assert "999999" in response.json["details"][0]["problem"]
    assert system.rows("api", "SELECT * FROM leads") == [] and system.rows("api", "SELECT * FROM outbox") == []


def test_a_lead_without_a_phone_or_source_is_stored_and_its_email_leaves_them_out(system):
    creator, assignee = system.user("creator"), system.user("agent")

    response = system.call("POST", "/leads", {"name": "Quiet Quinn", "email": "quinn@example.com",
                                              "product_id": product_of(system, assignee)}, creator["token"])
    assert response.status_code == 201 and (response.json["phone"], response.json["source"]) == (None, "")
    system.drain()
    [mail] = system.mails()
    assert "Phone" not in text_of(mail) and "Source" not in text_of(mail)


@pytest.mark.parametrize(("method", "path"), [("POST", "/leads"), ("GET", "/leads/1")])
def test_leads_need_a_valid_token(system, method, path):
    response = system.client.open(path, method=method, json={}, headers={"Authorization": "Bearer nope"})

    assert response.status_code == 401 and response.is_json


def test_a_lead_is_seen_by_its_creator_its_assignee_and_admins_and_does_not_exist_for_anyone_else(system):
    creator, assignee, stranger = system.user("creator"), system.user("agent"), system.user("stranger")
    lead_id = create_lead(system, creator, assignee).json["id"]
    system.drain()

    for token in (creator["token"], assignee["token"], system.admin()):
        assert system.call("GET", f"/leads/{lead_id}", token=token).status_code == 200
    hidden = system.call("GET", f"/leads/{lead_id}", token=stranger["token"])
    missing = system.call("GET", "/leads/999999", token=creator["token"])
    assert (hidden.status_code, missing.status_code) == (404, 404) and hidden.is_json


def test_a_redelivered_lead_created_event_sends_no_second_email(system):
    creator, assignee = system.user("creator"), system.user("agent")
    create_lead(system, creator, assignee)
    system.drain()
    with transaction("api") as session:
        session.execute(sa.text("UPDATE outbox SET sent_at = NULL"))  # as if the broker lost the ack

    assert relay("api", older_than_s=0) == 1
    system.drain()
    assert len(system.mails()) == 1


# --- market test-lead -------------------------------------------------------------------------

def market_test_lead(*args: str):
    return CliRunner().invoke(cli, ["test-lead", *args])


def test_market_test_lead_announces_a_lead_to_the_user_named_and_that_user_gets_the_email(system):
    creator, first, second = system.user("creator"), system.user("first"), system.user("second")
    lead_id = create_lead(system, creator, first).json["id"]
    system.drain()

    result = market_test_lead("--lead-id", str(lead_id), "--user-id", str(second["id"]))
    assert result.exit_code == 0, result.output
    assert f"lead {lead_id} (Lena Lead) assigned to user {second['id']} <second@example.com>" in result.output
    event_id = re.search(r"lead\.created ([0-9a-f-]{36})", result.output).group(1)
    payloads = [json.loads(r["payload"]) for r in system.rows(
        "api", "SELECT payload FROM outbox WHERE actor = 'mailer.on_lead_created'")]
    [announced] = [p for p in payloads if p["event_id"] == event_id]
    assert announced["data"]["assigned_user_id"] == second["id"]
    system.drain()
    assert sorted(m["To"] for m in system.mails()) == ["first@example.com", "second@example.com"]


def test_market_test_lead_defaults_to_the_first_lead_and_the_first_user_and_may_be_run_again(system):
    creator, assignee = system.user("creator"), system.user("agent")
    create_lead(system, creator, assignee, name="First Lead")
    create_lead(system, creator, assignee, name="Second Lead")
    system.drain()

    for _ in range(2):
        result = market_test_lead()
        assert result.exit_code == 0, result.output
        assert "(First Lead) assigned to user" in result.output and "<creator@example.com>" in result.output
    relay("api", older_than_s=0)
    system.drain()
    to_creator = [m for m in system.mails() if m["To"] == "creator@example.com"]
    assert [m["Subject"] for m in to_creator] == ["New lead assigned to you: First Lead"] * 2


@pytest.mark.parametrize(("args", "message"), [
    (("--lead-id", "999999"), "lead 999999 does not exist"), (("--user-id", "999999"), "user 999999 does not exist")])
def test_market_test_lead_exits_1_naming_a_lead_or_user_that_does_not_exist(system, args, message):
    creator = system.user("creator")
    create_lead(system, creator, creator)
    system.drain()

    result = market_test_lead(*args)
    assert result.exit_code == 1 and f"Error: {message}" in result.output
    assert system.rows("api", "SELECT * FROM outbox WHERE sent_at IS NULL") == []


def test_market_test_lead_exits_1_when_there_are_no_leads_yet(system):
    system.user("lonely")

    result = market_test_lead()
    assert result.exit_code == 1 and "there are no leads yet" in result.output
