"""One installation's view of a shared Prefect server: every run of this V6 home carries
the tag `home:v6-<id>` (`core.identity.installation_id` of its store root), and `v6
status` shows only runs with it. Deployments get the tag (their runs inherit it); runs
started in this process (`v6 run`, `v6 demo`) get it through Prefect's `tags` context."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from core.config import Settings
from core.identity import installation_id


def home_tag(settings: Settings) -> str:
    return f"home:{installation_id(settings.storage.root)}"


@contextmanager
def tagged(settings: Settings) -> Iterator[str]:
    """Runs started inside carry this home's tag."""
    from prefect import tags

    tag = home_tag(settings)
    with tags(tag):
        yield tag
