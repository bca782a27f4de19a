"""The #placeholder grammar of campaign templates: the api validates with it, the mailer fills with it.

`#` followed by a lowercase identifier is a placeholder (`#name`, `#paid_amount`); `##` is a literal
`#`; any other `#` (`#1`, `# `, `#Sale`) is just a `#`. Known placeholders are `contracts.PLACEHOLDERS`.
"""

import re
from collections.abc import Mapping

from shared.contracts import PLACEHOLDERS

_TOKEN = re.compile(r"#(#|[a-z_][a-z0-9_]*)")


def unknown(text: str) -> list[str]:
    """The placeholders in `text` that are not known, as written (`#foo`), each once, in order."""
    found = (f"#{token}" for token in _TOKEN.findall(text) if token != "#" and token not in PLACEHOLDERS)
    return list(dict.fromkeys(found))


def fill(text: str, values: Mapping[str, str]) -> str:
    """`text` with each known placeholder replaced by its value and `##` by `#`, in one pass: a value
    holding `#name` stays as it is."""

    def one(match: re.Match) -> str:
        token = match.group(1)
        if token == "#":
            return "#"
        return str(values.get(token, "")) if token in PLACEHOLDERS else match.group(0)

    return _TOKEN.sub(one, text)
