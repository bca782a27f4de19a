"""Money on the wire: integer minor units and an ISO 4217 currency, and how an amount reads in an email."""

from functools import lru_cache
from typing import Annotated

import pycountry
from pydantic import AfterValidator, Field, StringConstraints

# ISO 4217 codes that are not money a buyer pays in: precious metals, IMF units, bond units, testing, "none".
NOT_MONEY = frozenset({"XAG", "XAU", "XPD", "XPT", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA", "XTS", "XXX"})


@lru_cache(maxsize=512)  # a chunk of invoices checks the same few codes a thousand times
def _iso_4217(code: str) -> str:
    if pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"{code} is not an ISO 4217 currency code")
    if code in NOT_MONEY:
        raise ValueError(f"{code} is an ISO 4217 code, but not a currency anyone pays in")
    return code


Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_iso_4217)]
Minor = Annotated[int, Field(ge=0)]


# ISO 4217 minor-unit exponents that are not 2.
EXPONENTS = {c: 0 for c in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND",
                            "VUV", "XAF", "XOF", "XPF")} | {c: 3 for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR",
                                                                            "TND")}


def money(minor: int, currency: str) -> str:
    """'1999, USD' -> '19.99 USD', with the currency's own number of decimals."""
    exponent = EXPONENTS.get(currency, 2)
    if exponent == 0:
        return f"{minor:,} {currency}"
    whole, fraction = divmod(minor, 10**exponent)
    return f"{whole:,}.{fraction:0{exponent}d} {currency}"
