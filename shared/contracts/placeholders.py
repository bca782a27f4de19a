"""The campaign placeholder language: `#name` in a subject or body becomes the recipient's value."""

import re
from collections.abc import Mapping

from shared.contracts.events import Recipient

# Campaign personalisation: `#name` in a subject or body becomes the recipient's value. `#` followed by a
# lowercase identifier is a placeholder; `##` is a literal `#`; any other `#` (`#1`, `#Sale`) is just a `#`.
PLACEHOLDERS = tuple(field for field in Recipient.model_fields if field != "email")  # a recipient's values
_TOKEN = re.compile(r"#(#|[a-z_][a-z0-9_]*)")


def unknown_placeholders(text: str) -> list[str]:
    """The placeholders in `text` that are not known, as written (`#foo`), each once, in order."""
    found = (f"#{token}" for token in _TOKEN.findall(text) if token != "#" and token not in PLACEHOLDERS)
    return list(dict.fromkeys(found))


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """`text` with each known placeholder replaced by its value and `##` by `#`, in one pass: a value
    holding `#name` stays as it is."""

    def one(match: re.Match) -> str:
        token = match.group(1)
        if token == "#":
            return "#"
        return str(values.get(token, "")) if token in PLACEHOLDERS else match.group(0)

    return _TOKEN.sub(one, text)
