"""The HTTP API as a client sees it: validation, auth, errors as JSON, and product files."""

import hashlib
import io

import pytest

from shared.settings import get_settings
from shared.storage import LocalStorage
from tests.component.system import PASSWORD


def fields(response) -> set[str]:
    return {d["field"] for d in response.json.get("details", [])}


def new_product(system, seller: dict, price_minor: int = 1000, currency: str = "USD", title: str = "Guide") -> dict:
    """A product approved for sale."""
    response = system.call("POST", "/products", {"title": title, "price_minor": price_minor, "currency": currency},
                           seller["token"])
    assert response.status_code == 201, response.json
    return system.approve(response.json["id"])


def upload(system, product_id: int, token: str, data: bytes, filename: str = "guide.pdf"):
    return system.client.put(f"/products/{product_id}/file", headers={"Authorization": f"Bearer {token}"},
                             data={"file": (io.BytesIO(data), filename, "application/pdf")},
                             content_type="multipart/form-data")


# --- users ------------------------------------------------------------------------------------

def test_registering_with_a_bad_email_is_refused_with_400_naming_the_email_field(system):
    response = system.call("POST", "/users", {"email": "not-an-email", "name": "Ann", "password": PASSWORD})

    assert response.status_code == 400
    assert response.json["error"] == "invalid request body" and fields(response) == {"email"}
    assert system.rows("api", "SELECT * FROM users") == []


def test_registering_without_a_name_is_refused_with_400_naming_the_name_field(system):
    response = system.call("POST", "/users", {"email": "ann@example.com", "password": PASSWORD})

    assert response.status_code == 400 and fields(response) == {"name"}


def test_registering_an_email_twice_is_refused_with_409_whatever_its_case(system):
    first = system.call("POST", "/users", {"email": "ann@example.com", "name": "Ann", "password": PASSWORD})
    second = system.call("POST", "/users", {"email": "ann@example.com", "name": "Ann Again", "password": PASSWORD})
    shouted = system.call("POST", "/users", {"email": "ANN@Example.COM", "name": "Ann Shouting", "password": PASSWORD})

    assert first.status_code == 201 and first.json["token"]
    assert (second.status_code, shouted.status_code) == (409, 409)
    assert "already exists" in second.json["error"]
    assert len(system.rows("api", "SELECT * FROM users")) == 1


def test_a_registered_user_sees_themself_with_their_token(system):
    user = system.user("ann")
    response = system.call("GET", "/me", token=user["token"])

    assert response.status_code == 200 and response.json == {"id": user["id"], "email": "ann@example.com",
                                                             "name": "Ann", "is_admin": False}


# --- auth ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [("GET", "/me"), ("GET", "/cart"), ("POST", "/cart/items"),
                                              ("POST", "/orders"), ("GET", "/orders/1"), ("POST", "/products"),
                                              ("PUT", "/products/1/file")])
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer "])
def test_endpoints_that_need_a_user_answer_401_json_without_a_valid_token(system, method, path, authorization):
    system.user("someone")
    headers = {"Authorization": authorization} if authorization else {}
    response = system.client.open(path, method=method, json={}, headers=headers)

    assert response.status_code == 401
    assert response.is_json and "token" in response.json["error"]


# --- products -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "field"), [
    ({"price_minor": -100}, "price_minor"), ({"price_minor": 0}, "price_minor"), ({"currency": "usd"}, "currency"),
    ({"currency": "US"}, "currency"), ({"title": ""}, "title")])
def test_a_product_with_an_invalid_field_is_refused_with_400_naming_it(system, change, field):
    seller = system.user("seller")
    body = {"title": "Guide", "price_minor": 1000, "currency": "USD"} | change
    response = system.call("POST", "/products", body, seller["token"])

    assert response.status_code == 400 and fields(response) == {field}
    assert system.rows("api", "SELECT * FROM products") == []


@pytest.mark.parametrize(("content_type", "status"), [("text/plain", 415), ("application/json", 400)])
def test_a_body_that_is_not_a_json_object_is_refused_naming_json(system, content_type, status):
    seller = system.user("seller")
    response = system.client.post("/products", data="title=Guide&price_minor=100", content_type=content_type,
                                  headers={"Authorization": f"Bearer {seller['token']}"})

    assert response.status_code == status and response.is_json and "JSON" in response.json["error"]


def test_a_json_array_body_is_refused_with_400(system):
    response = system.call("POST", "/users", [{"email": "ann@example.com", "name": "Ann"}])

    assert response.status_code == 400 and "JSON object" in response.json["error"]


def test_products_are_listed_and_fetched_by_anyone(system):
    seller = system.user("seller")
    product = new_product(system, seller, title="Atlas")

    assert system.call("GET", "/products").json["products"] == [product]
    assert system.call("GET", f"/products/{product['id']}").json == product
    missing = system.call("GET", "/products/999999")
    assert missing.status_code == 404 and missing.is_json


# --- cart and checkout ------------------------------------------------------------------------

def test_adding_an_unknown_product_to_the_cart_is_answered_404(system):
    buyer = system.user("buyer")
    response = system.call("POST", "/cart/items", {"product_id": 999999}, buyer["token"])

    assert response.status_code == 404 and "999999" in response.json["error"]
    assert system.call("GET", "/cart", token=buyer["token"]).json == {"items": []}


def test_checking_out_an_empty_cart_is_answered_409(system):
    buyer = system.user("buyer")
    response = system.call("POST", "/orders", {"provider": "stripe"}, buyer["token"])

    assert response.status_code == 409 and "empty" in response.json["error"]
    assert system.rows("api", "SELECT * FROM orders") == []


def test_checking_out_a_cart_of_mixed_currencies_is_answered_409(system):
    seller, buyer = system.user("seller"), system.user("buyer")
    for currency in ("USD", "EUR"):
        product = new_product(system, seller, currency=currency)
        system.call("POST", "/cart/items", {"product_id": product["id"]}, buyer["token"])

    response = system.call("POST", "/orders", {"provider": "stripe"}, buyer["token"])
    assert response.status_code == 409 and "EUR" in response.json["error"] and "USD" in response.json["error"]
    assert system.rows("api", "SELECT * FROM orders") == []


def test_an_unknown_payment_provider_is_refused_with_400_naming_the_provider_field(system):
    seller, buyer = system.user("seller"), system.user("buyer")
    product = new_product(system, seller)
    system.call("POST", "/cart/items", {"product_id": product["id"]}, buyer["token"])

    response = system.call("POST", "/orders", {"provider": "paypal"}, buyer["token"])
    assert response.status_code == 400 and fields(response) == {"provider"}


def test_an_mpesa_checkout_without_a_phone_number_is_refused_with_400(system):
    seller, buyer = system.user("seller"), system.user("buyer")
    product = new_product(system, seller, currency="KES")
    system.call("POST", "/cart/items", {"product_id": product["id"]}, buyer["token"])

    response = system.call("POST", "/orders", {"provider": "mpesa"}, buyer["token"])
    assert response.status_code == 400 and "phone" in response.json["error"]
    badly = system.call("POST", "/orders", {"provider": "mpesa", "phone": "0712345678"}, buyer["token"])
    assert badly.status_code == 400 and fields(badly) == {"phone"}
    assert system.rows("api", "SELECT * FROM orders") == []


def test_another_users_order_is_answered_404(system):
    sale = system.order()
    stranger = system.user("stranger")
    order_id = sale["order"]["id"]

    assert system.call("GET", f"/orders/{order_id}", token=sale["buyer"]["token"]).status_code == 200
    response = system.call("GET", f"/orders/{order_id}", token=stranger["token"])
    assert response.status_code == 404 and response.is_json and "does not exist" in response.json["error"]


# --- errors ---------------------------------------------------------------------------------------

def test_an_unknown_route_is_answered_404_json(system):
    response = system.client.get("/no/such/route")

    assert response.status_code == 404 and response.is_json and response.json["error"]


def test_a_wrong_method_is_answered_405_json(system):
    response = system.client.delete("/products")

    assert response.status_code == 405 and response.is_json and response.json["error"]


# --- product files ------------------------------------------------------------------------------

def test_a_product_file_uploaded_by_someone_else_than_the_seller_is_refused_with_403(system):
    seller, other = system.user("seller"), system.user("other")
    product = new_product(system, seller)

    response = upload(system, product["id"], other["token"], b"%PDF-1.7 not yours")
    assert response.status_code == 403 and response.is_json and "seller" in response.json["error"]
    system.drain()
    assert system.call("GET", f"/products/{product['id']}").json["has_file"] is False
    assert system.rows("media", "SELECT * FROM product_files") == []
    storage = get_settings().storage_dir
    assert not storage.exists() or not any(p.is_file() for p in storage.rglob("*"))


def test_an_empty_product_file_is_refused_with_400(system):
    seller = system.user("seller")
    product = new_product(system, seller)

    response = upload(system, product["id"], seller["token"], b"")
    assert response.status_code == 400 and "empty" in response.json["error"]
    assert system.call("GET", f"/products/{product['id']}").json["has_file"] is False


def test_an_upload_without_a_file_field_is_refused_with_400(system):
    seller = system.user("seller")
    product = new_product(system, seller)

    response = system.client.put(f"/products/{product['id']}/file", data={"other": (io.BytesIO(b"x"), "x.pdf")},
                                 headers={"Authorization": f"Bearer {seller['token']}"},
                                 content_type="multipart/form-data")
    assert response.status_code == 400 and "'file'" in response.json["error"]


def test_a_file_for_an_unknown_product_is_answered_404(system):
    seller = system.user("seller")
    response = upload(system, 999999, seller["token"], b"data")

    assert response.status_code == 404 and response.is_json


def test_the_sellers_upload_is_stored_and_media_records_it_with_its_sha256(system):
    seller = system.user("seller")
    product = new_product(system, seller)
    data = b"%PDF-1.7\n" + bytes(range(256)) * 40

    response = upload(system, product["id"], seller["token"], data, filename="field-guide.pdf")
    assert response.status_code == 200 and response.json["has_file"] is True
    assert response.json["id"] == product["id"]
    system.drain()

    digest = hashlib.sha256(data).hexdigest()
    [row] = system.rows("media", "SELECT * FROM product_files")
    assert (row["product_id"], row["sha256"], row["size_bytes"], row["filename"]) == (
        product["id"], digest, len(data), "field-guide.pdf")
    assert row["content_type"] == "application/pdf"
    assert LocalStorage(get_settings().storage_dir).path(row["storage_key"]).read_bytes() == data


def test_a_new_file_for_an_approved_product_sends_it_back_to_review(system):
    seller = system.user("seller")
    product = new_product(system, seller)  # approved
    assert upload(system, product["id"], seller["token"], b"v1").status_code == 200
    product = system.call("GET", "/products?mine=true", token=seller["token"]).json["products"][0]
    assert product["status"] == "pending"
    assert system.call("GET", "/products").json["products"] == []
