"""One stored email delivered in three steps, so a fault in the bookkeeping never sends it twice: record
the attempt (its own commit), send, record the outcome (its own commit, retried alone when it fails)."""

import logging
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.mailer import handlers
from services.mailer.senders import ProviderUnavailable, Sender, SendFailed, send_guarded
from shared.db import transaction
from shared.settings import Settings

log = logging.getLogger(__name__)
SERVICE = "mailer"


class OutcomeUnrecorded(Exception):
    """An outcome could not be recorded in time; `outcome` goes on in a new message, not a new send."""

    def __init__(self, what: str, outcome: dict):
        super().__init__(f"the outcome of {what} could not be recorded yet")
        self.outcome = outcome


def deliver(message_id: str, sender: Sender, settings: Settings, outcome: dict | None = None) -> str | None:
    """Send a stored message once; returns the reason of a temporary refusal. Given the `outcome` of an
    earlier send whose record failed, only records it."""
    if outcome is not None:
        return _bookkeep(message_id, outcome, settings)
    with transaction(SERVICE) as session:
        ready = handlers.claim(session, message_id, settings.ambiguous_send_policy, settings.mail_ambiguous_after_s)
    if ready is None:
        return None
    try:
        [failure] = send_guarded(sender, [ready])
    except ProviderUnavailable:
        # Nothing went out: give the attempt back (if even that fails, the sweep finds it `sending` later).
        retrying(lambda session: handlers.release(session, message_id), settings.mail_bookkeeping_retry_s)
        raise
    except Exception as exc:
        # A transport bug, not an answer from the server: recorded as refused for now (as before this change,
        # when the rollback left it queued), so the retry sends it and the row says why.
        _bookkeep(message_id, as_outcome(SendFailed(f"{type(exc).__name__}: {exc}", permanent=False)), settings)
        raise
    return _bookkeep(message_id, as_outcome(failure), settings)


def as_outcome(failure: SendFailed | None) -> dict:
    """What the provider answered, as JSON a message can carry."""
    if failure is None:
        return {"accepted": True}
    return {"accepted": False, "reason": failure.reason, "permanent": failure.permanent}


def from_outcome(outcome: dict) -> SendFailed | None:
    return None if outcome["accepted"] else SendFailed(outcome["reason"], outcome["permanent"])


def _bookkeep(message_id: str, outcome: dict, settings: Settings) -> str | None:
    return bookkeep(lambda session: handlers.record(session, message_id, from_outcome(outcome)),
                    f"outbound message {message_id}", outcome, settings.mail_bookkeeping_retry_s)


def bookkeep(step: Callable[[Session], object], what: str, outcome: dict, window_s: float):
    """Record a send's `outcome` with `step`, retried for `window_s`; then OutcomeUnrecorded, carrying it on."""
    try:
        return retrying(step, window_s)
    except sa.exc.DBAPIError as exc:
        raise OutcomeUnrecorded(what, outcome) from exc


def retrying(step: Callable[[Session], object], window_s: float):
    """Run `step` in a transaction, again after a database error, until it commits or `window_s` is spent."""
    deadline, pause = time.monotonic() + window_s, 0.05
    while True:
        try:
            with transaction(SERVICE) as session:
                return step(session)
        except sa.exc.DBAPIError as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("Recording a mail outcome failed (%s); trying again in %.2f s.", type(exc).__name__, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
