"""Each status field's lifecycle, as a pure function: every move its table allows, and no other, without a
database."""

import itertools

import pytest

from services.api.models import ORDER, PRODUCT, WEBHOOK, OrderStatus, ProductStatus, WebhookStatus
from shared.contracts import CAMPAIGN, CampaignState
from shared.status import InvalidTransition

ALLOWED = {
    (ORDER, OrderStatus): {("pending", "paid"), ("pending", "failed"), ("failed", "paid"), ("failed", "failed")},
    (WEBHOOK, WebhookStatus): {("received", "processed"), ("received", "ignored"), ("received", "rejected")},
    (PRODUCT, ProductStatus): {("pending", "approved"), ("pending", "rejected"), ("approved", "rejected"),
                               ("approved", "pending"), ("rejected", "approved")},
    (CAMPAIGN, CampaignState): {("queued", "sending"), ("queued", "paused"), ("queued", "cancelled"),
                                ("queued", "completed"), ("sending", "paused"), ("sending", "cancelled"),
                                ("sending", "completed"), ("paused", "sending"), ("paused", "cancelled"),
                                ("paused", "completed")},
}
MOVES = [(lifecycle, kind, current, target, (current, target) in allowed)
         for (lifecycle, kind), allowed in ALLOWED.items()
         for current, target in itertools.product([s.value for s in kind], repeat=2)]


@pytest.mark.parametrize(("lifecycle", "kind", "current", "target", "allowed"), MOVES,
                         ids=[f"{m[1].__name__}:{m[2]}->{m[3]}" for m in MOVES])
def test_a_status_moves_exactly_where_its_lifecycle_allows(lifecycle, kind, current, target, allowed):
    if allowed:
        assert lifecycle(current, kind(target)) is kind(target)
    else:
        with pytest.raises(InvalidTransition, match=f"cannot go from {current} to {target}"):
            lifecycle(current, kind(target))


@pytest.mark.parametrize(("lifecycle", "kind"), list(ALLOWED))
def test_a_value_that_is_no_status_of_the_kind_is_refused(lifecycle, kind):
    with pytest.raises(InvalidTransition, match=f"'lost' is not a {kind.__name__}"):
        lifecycle("lost", next(iter(kind)))


def test_sources_and_final_read_the_same_table():
    assert PRODUCT.sources(ProductStatus.APPROVED) == [ProductStatus.PENDING, ProductStatus.REJECTED]
    assert [s for s in CampaignState if CAMPAIGN.final(s)] == [CampaignState.CANCELLED, CampaignState.COMPLETED]
    assert [s for s in OrderStatus if ORDER.final(s)] == [OrderStatus.PAID]
