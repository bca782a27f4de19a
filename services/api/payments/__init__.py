"""Payment providers' webhooks: verify what arrived (bytes in), and read the payment out of it.

Verification happens in the request, before anything is stored; reading the payment
happens later, in the api's actor, from the stored raw body. One module per provider.
"""

from services.api.payments.common import InvalidPayment, Payment, Received, WebhookRejected
from services.api.payments.mpesa import mpesa_payment, verify_mpesa
from services.api.payments.paytm import paytm_checksum_ok, paytm_payment, paytm_sign, verify_paytm
from services.api.payments.stripe import STRIPE_EVENTS, stripe_payment, verify_stripe

PAYMENT_READERS = {"stripe": stripe_payment, "paytm": paytm_payment, "mpesa": mpesa_payment}


__all__ = ["PAYMENT_READERS", "STRIPE_EVENTS", "InvalidPayment", "Payment", "Received", "WebhookRejected",
           "paytm_checksum_ok", "paytm_sign", "verify_mpesa", "verify_paytm", "verify_stripe"]
