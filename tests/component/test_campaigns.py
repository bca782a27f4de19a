"""Campaigns (seed 002): validation, personalisation, routing, per-recipient status, retries, outages,
pause / resume / cancel and duplicate messages, through the api and the mailer on the stub brokers."""

import json
import math
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dramatiq import Message
from dramatiq.rate_limits.backends import StubBackend

from services.api import campaign_status, campaigns
from services.api.users import create_admin
from services.mailer import actors as mailer_actors
from services.mailer import campaigns as mailer_campaigns
from services.mailer import senders
from services.mailer.pacing import PacedBatch, Pacer, Unlimited
from services.mailer.personalise import personalise
from services.mailer.senders import Outgoing, ProviderDown, SendFailed
from shared.contracts import CampaignControlRequested, CampaignProgressed, CampaignRequested
from shared.db import transaction
from shared.messaging import broker_for
from shared.settings import get_settings
from shared.storage import LocalStorage
from tests.component.system import post_stripe, stripe_event
from tests.support import TwoSlots

TEMPLATE = {"subject": "Hello #name", "body": "You pledged #pledge and paid #paid_amount."}


class FakeProvider:
    """A provider beside the real transports: keeps every batch, refuses the addresses it is told to
    (for good, or for now a number of times), can be down for a number of calls, and can hold a batch."""

    def __init__(self, refuse: dict | None = None, refuse_for_now: dict | None = None, down_for: int = 0,
                 hold: bool = False):
        self.refuse, self.refuse_for_now, self.down_for = refuse or {}, dict(refuse_for_now or {}), down_for
        self.batches: list[list[tuple[Outgoing, SendFailed | None]]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()

    def send_many(self, messages) -> list[SendFailed | None]:
        with self._lock:
            if self.down_for:
                self.down_for -= 1
                raise ProviderDown("the fake provider is down")
        self.entered.set()
        assert self.release.wait(10), "the test never released the held batch"
        batch = [(m, self._outcome(m)) for m in messages]
        with self._lock:
            self.batches.append(batch)
        return [outcome for _, outcome in batch]

    def _outcome(self, message: Outgoing) -> SendFailed | None:
        if message.to in self.refuse:
            return SendFailed(self.refuse[message.to], permanent=True)
        if self.refuse_for_now.get(message.to, 0) > 0:
            self.refuse_for_now[message.to] -= 1
            return SendFailed("451 4.7.1 try again later", permanent=False)
        return None

    def delivered(self) -> list[Outgoing]:
        return [m for batch in self.batches for m, outcome in batch if outcome is None]

    def batch_sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


@pytest.fixture
def provider(monkeypatch) -> FakeProvider:
    """The mailer's actors send through a FakeProvider; a fresh circuit breaker before and after."""
    fake = FakeProvider()
    monkeypatch.setattr(mailer_actors, "sender_from", lambda settings: fake)
    senders.breaker.cache_clear()
    yield fake
    senders.breaker.cache_clear()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """Chunks 20 ms apart, and a short breaker reset (the defaults are 10 s each)."""
    monkeypatch.setattr(get_settings(), "campaign_chunk_spacing_s", 0.02)
    monkeypatch.setattr(get_settings(), "breaker_reset_s", 0.05)


def people(count: int, **changes) -> list[dict]:
    return [{"email": f"person{i}@example.com", "name": f"Person {i}", "pledge": f"{10 + i} USD",
             "paid_amount": f"{i}.00 USD", "balance": "5.00 USD", "days_remain": "12"} | changes
            for i in range(count)]


def start(system, recipients=None, token=None, **fields) -> dict:
    token = token or system.campaigner()["token"]
    response = system.call("POST", "/campaigns", TEMPLATE | {"recipients": recipients} | fields, token)
    assert response.status_code == 202, response.json
    return response.json | {"token": token}


def status(system, campaign: dict) -> dict:
    response = system.call("GET", campaign["status_url"], token=campaign["token"])
    assert response.status_code == 200, response.json
    return response.json


def wait_for(what: str, probe, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


def sends(system) -> list[dict]:
    """The campaign messages the mailer enqueued, per queue and actor (its outbox keeps each one)."""
    return system.rows("mailer", "SELECT queue, actor, count(*) AS n FROM outbox "
                                 "WHERE actor LIKE 'mailer.send_campaign%' GROUP BY queue, actor")


def recipient_rows(system, campaign: dict) -> list[dict]:
    return system.rows("mailer", "SELECT position, email, status, error, attempts FROM campaign_recipients "
                                 "WHERE campaign_id = :id ORDER BY position", id=campaign["id"])


# --- validation at creation ---------------------------------------------------------------------

@pytest.mark.parametrize(("field", "text"), [("body", "Dear #name, #foo is due"), ("subject", "#foo for #name")])
def test_an_unknown_placeholder_is_refused_at_creation_with_400_naming_it(system, field, text):
    owner = system.campaigner()
    response = system.call("POST", "/campaigns", TEMPLATE | {field: text, "recipients": people(1)}, owner["token"])

    assert response.status_code == 400 and "#foo" in response.json["error"]
    assert response.json["details"] == [{"field": field, "problem": "unknown placeholder #foo"}]
    assert system.rows("api", "SELECT * FROM outbox") == []


@pytest.mark.parametrize(("change", "field"), [
    ({"recipients": [{"email": "not-an-address"}]}, "recipients.0.email"),
    ({"recipients": []}, "recipients"),
    ({"recipients": None}, ""),
    ({"recipients": people(1), "segment": "buyers"}, ""),
    ({"subject": ""}, "subject"),
    ({"segment": "everyone", "recipients": None}, "segment"),
])
def test_a_campaign_without_a_valid_audience_or_template_is_refused_with_400(system, change, field):
    owner = system.campaigner()
    response = system.call("POST", "/campaigns", TEMPLATE | {"recipients": people(1)} | change, owner["token"])

    assert response.status_code == 400, response.json
    assert field in {d["field"] for d in response.json["details"]}


def test_a_list_of_many_bad_addresses_is_answered_with_the_first_few_problems(system):
    owner = system.campaigner()
    response = system.call("POST", "/campaigns", TEMPLATE | {"recipients": [{"email": f"bad{i}"} for i in range(50)]},
                           owner["token"])

    assert response.status_code == 400
    details = response.json["details"]
    assert len(details) == 21 and details[-1]["problem"] == "and 30 more"


def test_more_recipients_than_the_maximum_are_refused_with_400(system, monkeypatch):
    monkeypatch.setattr(campaigns, "MAX_RECIPIENTS", 5)
    owner = system.campaigner()
    response = system.call("POST", "/campaigns", TEMPLATE | {"recipients": people(6)}, owner["token"])

    assert response.status_code == 400 and "at most 5 recipients" in response.json["error"]


def test_creating_a_campaign_needs_a_token(system):
    assert system.call("POST", "/campaigns", TEMPLATE | {"recipients": people(1)}).status_code == 401


# --- personalisation ------------------------------------------------------------------------------

def test_placeholders_are_filled_per_recipient_and_a_double_hash_is_a_literal_hash(system):
    body = "Dear #name: pledge #pledge, paid #paid_amount, balance #balance, #days_remain days. Ticket ##1, ##name."
    campaign = start(system, people(2), subject="#name, ##1 of #days_remain", body=body)
    system.drain()

    mails = sorted(system.mails(), key=lambda m: m["To"])
    assert [m["To"] for m in mails] == ["person0@example.com", "person1@example.com"]
    assert mails[1]["Subject"] == "Person 1, #1 of 12"
    assert mails[1].get_body(("plain",)).get_content().strip() == (
        "Dear Person 1: pledge 11 USD, paid 1.00 USD, balance 5.00 USD, 12 days. Ticket #1, #name.")
    assert status(system, campaign)["status"] == "completed"


def test_a_value_holding_a_placeholder_is_not_filled_again():
    subject, text, _ = personalise("Hi #name", "#name owes #balance", {"name": "#balance", "balance": "3 USD"})

    assert (subject, text) == ("Hi #balance", "#balance owes 3 USD")


def test_a_name_cannot_add_a_header_nor_markup_to_the_email_it_is_sent_in(system):
    name = "Ann\r\nBcc: spy@example.com\n<script>alert(1)</script>"
    start(system, [{"email": "ann@example.com", "name": name}], subject="Hello #name", body="Dear #name,\nbye")
    system.drain()

    [mail] = system.mails()
    assert mail["Bcc"] is None and mail["To"] == "ann@example.com"
    assert mail["Subject"] == "Hello Ann Bcc: spy@example.com <script>alert(1)</script>"
    html = mail.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Dear Ann<br>\nBcc: spy@example.com<br>\n&lt;script&gt;" in html


@pytest.mark.parametrize("breaker", ["\r\n", "\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"])
def test_the_subject_is_one_line_whatever_line_break_a_value_holds(breaker):
    subject, _, _ = personalise("Hi #name!", "b", {"name": f"Ann{breaker}Bcc: x@example.com"})

    assert subject == "Hi Ann Bcc: x@example.com!" and len(subject.splitlines()) == 1


# --- routing --------------------------------------------------------------------------------------

def test_ninety_nine_recipients_go_as_ninety_nine_messages_on_mailer_messages(system, provider):
    start(system, people(99))
    system.drain()

    assert sends(system) == [{"queue": "mailer.messages", "actor": "mailer.send_campaign_message", "n": 99}]
    assert provider.batch_sizes() == [1] * 99 and len({m.to for m in provider.delivered()}) == 99


def test_a_campaign_a_user_triggered_goes_on_mailer_high_priority(system, provider):
    start(system, people(3), user_triggered=True)
    system.drain()

    assert sends(system) == [{"queue": "mailer.high_priority", "actor": "mailer.send_campaign_message_priority",
                              "n": 3}]
    assert len(provider.delivered()) == 3


@pytest.mark.parametrize(("count", "chunks"), [(100, [50, 50]), (160, [50, 50, 50, 10])])
def test_a_hundred_recipients_or_more_go_in_chunks_of_fifty_on_mailer_bulk_messages(system, provider, count, chunks):
    campaign = start(system, people(count), user_triggered=True)
    system.drain()

    assert sends(system) == [{"queue": "mailer.bulk_messages", "actor": "mailer.send_campaign_chunk",
                              "n": len(chunks)}]
    assert provider.batch_sizes() == chunks
    assert sorted(m.to for m in provider.delivered()) == sorted(p["email"] for p in people(count))
    assert status(system, campaign) | {"id": None, "title": None} == {
        "id": None, "title": None, "status": "completed", "total": count, "sent": count, "failed": 0, "queued": 0,
        "cancelled": 0, "delivery_rate": 1.0, "user_triggered": True, "status_url": campaign["status_url"]}


def test_a_list_over_a_thousand_travels_as_a_file_in_storage(system, provider, monkeypatch):
    monkeypatch.setattr(campaigns, "INLINE_RECIPIENTS", 5)
    campaign = start(system, people(7))
    system.drain()

    [row] = system.rows("api", "SELECT payload FROM outbox WHERE actor = 'mailer.on_campaign_requested'")
    data = (row["payload"] if isinstance(row["payload"], dict) else json.loads(row["payload"]))["data"]
    assert data["recipients"] == [] and data["recipients_key"] == f"campaigns/{campaign['id']}/recipients.json"
    stored = json.loads(LocalStorage(get_settings().storage_dir).path(data["recipients_key"]).read_bytes())
    assert [r["email"] for r in stored] == [p["email"] for p in people(7)]
    assert len(provider.delivered()) == 7


def test_an_address_listed_twice_is_sent_once(system, provider):
    campaign = start(system, people(2) + [{"email": "PERSON0@example.com", "name": "Again"}])
    system.drain()

    assert campaign["total"] == 2 and sorted(m.to for m in provider.delivered()) == [
        "person0@example.com", "person1@example.com"]


# --- status of every recipient ---------------------------------------------------------------------

@pytest.mark.parametrize("count", [10, 120])
def test_a_refused_address_fails_with_its_reason_and_the_delivery_rate_counts_it(system, provider, count):
    provider.refuse["person3@example.com"] = "550 5.1.1 no such user"
    campaign = start(system, people(count))
    system.drain()

    rows = recipient_rows(system, campaign)
    assert [r for r in rows if r["status"] != "sent"] == [
        {"position": 3, "email": "person3@example.com", "status": "failed", "error": "550 5.1.1 no such user",
         "attempts": 1}]
    shown = status(system, campaign)
    assert (shown["status"], shown["sent"], shown["failed"], shown["queued"]) == ("completed", count - 1, 1, 0)
    assert shown["delivery_rate"] == round((count - 1) / count, 4)


def test_the_status_url_answers_only_the_campaigns_owner(system, provider):
    campaign = start(system, people(1))
    stranger = system.user("stranger")

    assert system.call("GET", campaign["status_url"], token=stranger["token"]).status_code == 404
    assert system.call("POST", f"{campaign['status_url']}/pause", token=stranger["token"]).status_code == 404
    assert system.call("GET", "/campaigns/nope", token=campaign["token"]).status_code == 404
    assert campaign["status"] == "queued" and campaign["status_url"] == f"/campaigns/{campaign['id']}"


# --- retries and outages ----------------------------------------------------------------------------

@pytest.fixture
def quick_retries(monkeypatch):
    broker = broker_for("mailer")
    for name in ("mailer.send_campaign_chunk", "mailer.send_campaign_message"):
        monkeypatch.setitem(broker.get_actor(name).options, "min_backoff", 10)
        monkeypatch.setitem(broker.get_actor(name).options, "max_backoff", 50)


@pytest.mark.parametrize("count", [5, 100])
def test_a_recipient_refused_for_now_is_retried_alone_and_fails_after_three_attempts(
        system, provider, quick_retries, count):
    provider.refuse_for_now = {"person1@example.com": math.inf, "person2@example.com": 1}
    campaign = start(system, people(count))
    system.drain()

    delivered = [m.to for m in provider.delivered()]
    assert sorted(delivered) == sorted(p["email"] for p in people(count) if p["email"] != "person1@example.com")
    assert len(delivered) == len(set(delivered)), "a retry sent someone twice"
    rows = {r["position"]: r for r in recipient_rows(system, campaign)}
    assert (rows[1]["status"], rows[1]["attempts"], rows[1]["error"]) == ("failed", 3, "451 4.7.1 try again later")
    assert (rows[2]["status"], rows[2]["attempts"]) == ("sent", 2)
    assert status(system, campaign)["failed"] == 1 and status(system, campaign)["status"] == "completed"


@pytest.mark.parametrize("count", [3, 100])
def test_an_unreachable_provider_defers_the_sends_and_fails_nobody(system, provider, count):
    provider.down_for = 5  # trips the breaker (3 in a row), which then defers until it lets a trial through
    campaign = start(system, people(count))
    system.drain()

    assert sorted(m.to for m in provider.delivered()) == sorted(p["email"] for p in people(count))
    assert {(r["status"], r["attempts"]) for r in recipient_rows(system, campaign)} == {("sent", 1)}
    assert system.rows("mailer", "SELECT * FROM failed_jobs") == []


# --- pause, resume, cancel -----------------------------------------------------------------------------

ACTED = {"pause": "paused", "cancel": "cancelled"}


def hold_first_chunk_and(system, provider, action: str) -> dict:
    """Start 150 recipients, hold chunk 0 at the provider, ask for `action` meanwhile, then let chunk 0 go."""
    provider.release.clear()
    campaign = start(system, people(150))
    assert provider.entered.wait(10)
    response = system.call("POST", f"{campaign['status_url']}/{action}", token=campaign["token"])
    assert response.status_code == 202 and response.json["action"] == action
    # The chunk holds no lock while it sends: the request is handled before the chunk's outcome is recorded.
    wait_for(f"the {action} request to be handled", lambda: system.rows(
        "mailer", "SELECT status FROM campaigns WHERE id = :id", id=campaign["id"])[0]["status"] == ACTED[action])
    provider.release.set()
    system.drain()
    return campaign


def test_pausing_stops_after_the_chunk_being_sent_and_resuming_sends_the_rest_once(system, provider):
    campaign = hold_first_chunk_and(system, provider, "pause")

    assert provider.batch_sizes() == [50]
    shown = status(system, campaign)
    assert (shown["status"], shown["sent"], shown["queued"]) == ("paused", 50, 100)
    assert system.call("POST", f"{campaign['status_url']}/pause", token=campaign["token"]).status_code == 202

    assert system.call("POST", f"{campaign['status_url']}/resume", token=campaign["token"]).status_code == 202
    system.drain()

    assert provider.batch_sizes() == [50, 50, 50]
    assert sorted(m.to for m in provider.delivered()) == sorted(p["email"] for p in people(150))
    shown = status(system, campaign)
    assert (shown["status"], shown["sent"], shown["queued"]) == ("completed", 150, 0)


def test_cancelling_stops_after_the_chunk_being_sent_and_cancels_everyone_left(system, provider):
    campaign = hold_first_chunk_and(system, provider, "cancel")

    assert provider.batch_sizes() == [50]
    shown = status(system, campaign)
    assert (shown["status"], shown["sent"], shown["queued"], shown["cancelled"]) == ("cancelled", 50, 0, 100)
    assert {r["status"] for r in recipient_rows(system, campaign)[50:]} == {"cancelled"}
    response = system.call("POST", f"{campaign['status_url']}/resume", token=campaign["token"])
    assert response.status_code == 409 and "cancelled" in response.json["error"]


def test_the_messages_of_a_paused_small_campaign_send_nothing_until_it_is_resumed(system, provider):
    campaign_id = str(uuid.uuid4())
    requested = CampaignRequested(campaign_id=campaign_id, title="t", subject="Hi #name", body="b",
                                  recipients=people(3))
    routing = mailer_campaigns.Routing(100, 50, LocalStorage(get_settings().storage_dir))
    with transaction("mailer") as session:  # paused before its messages leave
        mailer_campaigns.on_campaign_requested(session, requested, routing)
        mailer_campaigns.on_campaign_control_requested(session, control(campaign_id, "pause"), now())
    system.drain()

    assert provider.delivered() == []
    assert {r["status"] for r in recipient_rows(system, {"id": campaign_id})} == {"queued"}

    with transaction("mailer") as session:
        mailer_campaigns.on_campaign_control_requested(session, control(campaign_id, "resume"), now())
    system.drain()

    assert sorted(m.to for m in provider.delivered()) == sorted(p["email"] for p in people(3))
    assert system.rows("mailer", "SELECT status, sent FROM campaigns") == [{"status": "completed", "sent": 3}]


def test_a_control_request_older_than_one_handled_already_changes_nothing(system, provider):
    """Two consumers can take pause-then-resume in the wrong order; the later request must win."""
    campaign_id = str(uuid.uuid4())
    requested = CampaignRequested(campaign_id=campaign_id, title="t", subject="Hi", body="b", recipients=people(2))
    routing = mailer_campaigns.Routing(100, 50, LocalStorage(get_settings().storage_dir))
    paused_at = datetime.now(UTC)
    with transaction("mailer") as session:
        mailer_campaigns.on_campaign_requested(session, requested, routing)
        mailer_campaigns.on_campaign_control_requested(session, control(campaign_id, "pause"), paused_at.isoformat())
        mailer_campaigns.on_campaign_control_requested(
            session, control(campaign_id, "resume"), (paused_at - timedelta(milliseconds=5)).isoformat())
    system.drain()

    assert provider.delivered() == []
    assert system.rows("mailer", "SELECT status FROM campaigns") == [{"status": "paused"}]


def control(campaign_id: str, action: str) -> CampaignControlRequested:
    return CampaignControlRequested(campaign_id=campaign_id, action=action)


def now() -> str:
    return datetime.now(UTC).isoformat()


# --- duplicates --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "actor", "parts"), [
    (100, "mailer.send_campaign_chunk", [{"chunk": 0}, {"chunk": 1}, {"chunk": 0}]),
    (3, "mailer.send_campaign_message", [{"position": 0}, {"position": 2}])])
def test_a_redelivered_campaign_message_sends_nothing_twice(system, provider, count, actor, parts):
    campaign = start(system, people(count))
    system.drain()
    broker = broker_for("mailer")
    queue = broker.get_actor(actor).queue_name
    for part in parts:
        broker.enqueue(Message(queue_name=queue, actor_name=actor, args=({"campaign_id": campaign["id"]} | part,),
                               kwargs={}, options={}))
    system.drain()

    assert len(provider.delivered()) == count
    assert {r["attempts"] for r in recipient_rows(system, campaign)} == {1}


# --- segments ---------------------------------------------------------------------------------------------

def test_a_segment_is_resolved_by_the_api_into_its_users_with_what_they_paid(system, provider):
    purchase = system.order(price_minor=2500, currency="USD")
    assert post_stripe(system, stripe_event(purchase["order"])).status_code == 200
    system.drain()
    _, admin_token = create_admin("boss@example.com", "Boss")
    template = {"subject": "Thanks #name", "body": "You paid #paid_amount."}

    buyers = start(system, token=admin_token, segment="buyers", **template)
    system.drain()
    everyone = start(system, token=admin_token, segment="all_users", **template)
    system.drain()

    mails = {(m.message_id.split(".")[1], m.to): (m.subject, m.text) for m in provider.delivered()
             if m.message_id.startswith("campaign.")}
    buyer, seller = purchase["buyer"], purchase["seller"]
    assert {to for cid, to in mails if cid == buyers["id"]} == {buyer["email"]}
    assert mails[(buyers["id"], buyer["email"])] == (f"Thanks {buyer['name']}", "You paid 25.00 USD.")
    every_user = {r["email"] for r in system.rows("api", "SELECT email FROM users")}
    assert {to for cid, to in mails if cid == everyone["id"]} == every_user
    assert {buyer["email"], seller["email"], "boss@example.com"} <= every_user
    assert mails[(everyone["id"], seller["email"])] == (f"Thanks {seller['name']}", "You paid .")


@pytest.mark.parametrize("audience", [{"segment": "all_users"}, {"recipients": [{"email": "x@example.com"}]}])
def test_only_an_admin_can_send_a_campaign(system, audience):
    member = system.user("member")
    response = system.call("POST", "/campaigns", TEMPLATE | audience, member["token"])

    assert response.status_code == 403 and response.json == {"error": "only an admin can send campaigns"}
    assert system.rows("api", "SELECT * FROM campaign_statuses") == []


# --- the api's read model --------------------------------------------------------------------------------

def test_an_older_progress_report_arriving_late_never_overwrites_a_newer_one(system, provider):
    campaign = start(system, people(1))
    system.drain()
    [row] = system.rows("api", "SELECT progressed_at FROM campaign_statuses")
    later = datetime.now(UTC) + timedelta(minutes=1)

    def report(status: str, sent: int, at: datetime) -> None:
        event = CampaignProgressed(campaign_id=campaign["id"], status=status, total=200, sent=sent, failed=0)
        with transaction("api") as session:
            campaign_status.on_campaign_progressed(session, event, at.isoformat())

    with transaction("api") as session:
        session.execute(campaign_status.CampaignStatus.__table__.update().values(
            status="sending", sent=0, total=200, progressed_at=None))
    report("sending", 100, later)
    report("sending", 50, later + timedelta(seconds=5))  # fewer sent: older, whatever its clock says
    assert (status(system, campaign)["sent"], status(system, campaign)["status"]) == (100, "sending")
    report("paused", 100, later + timedelta(seconds=2))
    report("sending", 100, later + timedelta(seconds=1))  # same counts, earlier: the pause stands
    assert status(system, campaign)["status"] == "paused"
    report("cancelled", 100, later + timedelta(seconds=3))
    report("sending", 100, later + timedelta(seconds=4))  # nothing reopens a finished campaign
    assert status(system, campaign)["status"] == "cancelled"
    assert row["progressed_at"] is not None


# --- the shared rate limit -----------------------------------------------------------------------------

def test_the_pacer_hands_out_at_most_the_limit_in_any_calendar_second_evenly_spread():
    pacer = Pacer(StubBackend(), f"test-{uuid.uuid4()}", per_second=20)
    batch = PacedBatch(list(range(15)), pacer, deadline=time.monotonic() + 10)
    taken = []
    for _ in batch:
        taken.append(time.time())

    assert batch.taken == 15
    slots = [int(t * 1000) // 50 for t in taken]
    assert len(set(slots)) == 15, "two emails shared one 50 ms slot"
    assert taken[-1] - taken[0] >= 14 * 0.05 - 0.05


def test_a_paced_batch_stops_handing_out_messages_where_the_pacer_gives_no_slot_in_time():
    batch = PacedBatch(["a", "b", "c"], TwoSlots(), deadline=time.monotonic() + 10)

    assert list(batch) == ["a", "b"] and batch.taken == 2 and len(batch) == 3


def test_a_paced_batch_hands_out_nothing_after_its_deadline():
    batch = PacedBatch(["a", "b"], Unlimited(), deadline=time.monotonic() - 0.001)

    assert list(batch) == [] and batch.taken == 0


def test_waiting_for_a_slot_ends_at_the_deadline():
    pacer = Pacer(StubBackend(), f"test-{uuid.uuid4()}", per_second=1)
    while pacer.take(time.monotonic()):  # use up this second's slot
        pass
    started = time.monotonic()

    pacer.take(started + 0.05)  # the next slot is up to a second away

    assert time.monotonic() - started < 0.5


def test_a_slot_granted_only_after_its_bucket_ended_is_not_used():
    """Dramatiq's limiter names the bucket before asking Redis; a late answer would put two sends in one bucket."""

    class SlowFirstAnswer(StubBackend):
        def __init__(self):
            super().__init__()
            self.asked = 0

        def add(self, key, value, ttl):
            self.asked += 1
            if self.asked == 1:
                time.sleep(0.06)  # longer than a 50 ms bucket
            return super().add(key, value, ttl)

    backend = SlowFirstAnswer()
    pacer = Pacer(backend, f"test-{uuid.uuid4()}", per_second=20)

    assert pacer.take(time.monotonic() + 5) is True
    assert backend.asked >= 2


def test_resuming_a_campaign_whose_last_sends_finished_during_the_pause_completes_it(system, provider):
    campaign = start(system, people(3))
    system.drain()
    # As when a pause lands while the last messages are out: they are tallied, the campaign stays paused.
    with transaction("mailer") as session:
        session.execute(sa.text("UPDATE campaigns SET status = 'paused', finished_at = NULL"))

    with transaction("mailer") as session:
        mailer_campaigns.on_campaign_control_requested(session, control(campaign["id"], "resume"), now())
    system.drain()

    assert system.rows("mailer", "SELECT status, sent FROM campaigns") == [{"status": "completed", "sent": 3}]
    assert len(provider.delivered()) == 3


def test_a_cancel_wins_even_when_it_was_requested_before_the_last_resume(system, provider):
    campaign_id = str(uuid.uuid4())
    requested = CampaignRequested(campaign_id=campaign_id, title="t", subject="Hi", body="b", recipients=people(3))
    routing = mailer_campaigns.Routing(100, 50, LocalStorage(get_settings().storage_dir))
    cancel_at = now()
    with transaction("mailer") as session:
        mailer_campaigns.on_campaign_requested(session, requested, routing)
        mailer_campaigns.on_campaign_control_requested(session, control(campaign_id, "pause"), now())
        mailer_campaigns.on_campaign_control_requested(session, control(campaign_id, "resume"), now())
        mailer_campaigns.on_campaign_control_requested(session, control(campaign_id, "cancel"), cancel_at)
    system.drain()

    assert system.rows("mailer", "SELECT status FROM campaigns") == [{"status": "cancelled"}]
    assert provider.delivered() == []
