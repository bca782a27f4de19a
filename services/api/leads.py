"""Leads: stored by the api, announced to the assigned user by email through `lead.created`."""

from typing import Annotated

from flask import Blueprint, g
from pydantic import BaseModel, EmailStr, Field, StringConstraints, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.http import ApiError, Body, api, authenticated, is_admin, parse, rate_limited, user_or_address
from services.api.models import Lead, Product, ProductStatus, User
from shared.contracts import LeadCreated
from shared.db import transaction
from shared.outbox import publish

bp = Blueprint("leads", __name__)

Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 ().-]{3,30}$")]


class NewLead(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
    email: EmailStr
    phone: Phone | None = None
    source: str = Field(default="", max_length=64)
    product_id: int | None = None  # an enquiry about a product goes to its seller
    assigned_user_id: int | None = None  # admins only: assign to any user

    @model_validator(mode="after")
    def one_assignee(self):
        if (self.product_id is None) == (self.assigned_user_id is None):
            raise ValueError("give either product_id (the lead goes to its seller) or, as an admin, assigned_user_id")
        return self


class LeadOut(BaseModel):
    id: int
    name: str
    email: str
    phone: str | None
    source: str
    product_id: int | None
    assigned_user_id: int
    created_at: str

    @classmethod
    def of(cls, lead: Lead) -> "LeadOut":
        return cls(id=lead.id, name=lead.name, email=lead.email, phone=lead.phone, source=lead.source,
                   product_id=lead.product_id, assigned_user_id=lead.assigned_user_id,
                   created_at=lead.created_at.isoformat())


def lead_created(lead: Lead, assignee: User) -> LeadCreated:
    return LeadCreated(lead_id=lead.id, lead_name=lead.name, lead_email=lead.email, lead_phone=lead.phone,
                       source=lead.source, assigned_user_id=assignee.id, assigned_email=assignee.email,
                       assigned_name=assignee.name)


@bp.post("/leads")
@api.operation({201: LeadOut}, body=NewLead, auth=True, errors=[403, 404, 429], tags=["leads"])
@rate_limited("leads", key=user_or_address)
@authenticated
def create_lead():
    """Store the lead and announce it in one transaction; the email is only a message, so it cannot fail this."""
    body = parse(NewLead)
    with transaction("api") as session:
        assignee = _assignee(session, body)
        lead = Lead(**body.model_dump(exclude={"assigned_user_id"}), assigned_user_id=assignee.id,
                    created_by_id=g.user_id)
        session.add(lead)
        session.flush()
        publish(session, lead_created(lead, assignee))
        return LeadOut.of(lead), 201


def _assignee(session: Session, body: NewLead) -> User:
    """Who the lead goes to. Anyone may send a lead about an approved product to its seller, who chose to
    sell in public; only admins pick any user, so nobody else can email arbitrary users or probe user ids."""
    if body.product_id is not None:
        product = session.get(Product, body.product_id)
        if product is None or product.status != ProductStatus.APPROVED:
            raise ApiError(404, f"product {body.product_id} does not exist")
        seller = session.get(User, product.seller_id)
        assert seller is not None  # the product's seller (users are never deleted)
        return seller
    if not is_admin(session, g.user_id):
        raise ApiError(403, "only an admin can assign a lead to a user; send a lead about a product (product_id)")
    assignee = session.get(User, body.assigned_user_id)
    if assignee is None:
        raise ApiError(400, "invalid request body", [{"field": "assigned_user_id", "problem":
                                                      f"user {body.assigned_user_id} does not exist"}])
    return assignee


@bp.get("/leads/<int:lead_id>")
@api.operation({200: LeadOut}, auth=True, errors=[404], tags=["leads"])
@authenticated
def get_lead(lead_id: int):
    """Its creator, its assignee and admins see a lead; to anyone else it does not exist."""
    with transaction("api") as session:
        lead = session.get(Lead, lead_id)
        if lead is None or not _visible(session, lead):
            raise ApiError(404, f"lead {lead_id} does not exist")
        return LeadOut.of(lead)


def _visible(session: Session, lead: Lead) -> bool:
    return g.user_id in (lead.created_by_id, lead.assigned_user_id) or is_admin(session, g.user_id)


def announce_again(session: Session, lead_id: int | None, user_id: int | None) -> tuple[Lead, User, str]:
    """Publish `lead.created` for a stored lead assigned to a user (the first of each by default), to test
    the notification path; raises LookupError naming what is missing."""
    lead, user = _by_id_or_first(session, Lead, lead_id), _by_id_or_first(session, User, user_id)
    for kind, wanted, found in (("lead", lead_id, lead), ("user", user_id, user)):
        if found is None:
            raise LookupError(f"{kind} {wanted} does not exist" if wanted is not None else f"there are no {kind}s yet")
    event_id = publish(session, lead_created(lead, user))
    return lead, user, event_id


def _by_id_or_first(session: Session, model, wanted: int | None):
    if wanted is not None:
        return session.get(model, wanted)
    return session.scalars(select(model).order_by(model.id)).first()
