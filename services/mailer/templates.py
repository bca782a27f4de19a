"""Email templates: one folder per template with subject.txt, body.txt and body.html (autoescaped)."""

from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

# ISO 4217 minor-unit exponents that are not 2.
EXPONENTS = {c: 0 for c in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND",
                            "VUV", "XAF", "XOF", "XPF")} | {c: 3 for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR",
                                                                            "TND")}


def money(minor: int, currency: str) -> str:
    exponent = EXPONENTS.get(currency, 2)
    if exponent == 0:
        return f"{minor:,} {currency}"
    whole, fraction = divmod(minor, 10**exponent)
    return f"{whole:,}.{fraction:0{exponent}d} {currency}"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("services.mailer", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["money"] = money
    return env


def render(name: str, context: dict) -> tuple[str, str, str]:
    """(subject, text, html); the subject is one line whatever the data holds."""
    env = environment()
    subject = " ".join(env.get_template(f"{name}/subject.txt").render(context).split())
    return (subject, env.get_template(f"{name}/body.txt").render(context),
            env.get_template(f"{name}/body.html").render(context))
