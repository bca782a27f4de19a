"""Email templates: one folder per template with subject.txt, body.txt and body.html (autoescaped)."""

from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from shared.contracts import money


@lru_cache(maxsize=1)
def environment() -> Environment:
    # auto_reload off: templates ship with the code, and checking each file's mtime on every get_template was
    # 39% of the mailer's CPU in a 400,000-invoice run.
    env = Environment(loader=PackageLoader("services.mailer", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True,
                      auto_reload=False)
    env.filters["money"] = money
    return env


@lru_cache(maxsize=64)
def template(path: str) -> Template:
    """A template compiled once per process: a chunk renders thousands, and the environment's own cache takes a
    lock and a lookup for each."""
    return environment().get_template(path)


def render(name: str, context: dict) -> tuple[str, str, str]:
    """(subject, text, html); the subject is one line whatever the data holds."""
    return (subject(name, context), template(f"{name}/body.txt").render(context),
            template(f"{name}/body.html").render(context))


def subject(name: str, context: dict) -> str:
    return " ".join(template(f"{name}/subject.txt").render(context).split())
