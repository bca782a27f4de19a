"""A campaign's template made one recipient's email: #placeholders filled, a one-line subject, and an
HTML part that is the escaped text with line breaks as <br>."""

import html

from shared.contracts import PLACEHOLDERS, fill_placeholders


def personalise(subject: str, body: str, fields: dict) -> tuple[str, str, str]:
    """(subject, text, html) for one recipient. Whatever the values hold, the subject stays one line
    (every kind of line break becomes a space) and the HTML part shows them as text, never as markup."""
    values = {name: str(fields.get(name) or "") for name in PLACEHOLDERS}
    one_line = " ".join(fill_placeholders(subject, values).split())
    text = "\n".join(fill_placeholders(body, values).splitlines())
    markup = "<br>\n".join(html.escape(line) for line in text.split("\n"))
    return one_line, text, f"<!DOCTYPE html>\n<html><body>\n<p>{markup}</p>\n</body></html>\n"
