"""The MLflow registry webhook that tells quantmill about new model versions."""

from __future__ import annotations

from quantmill.tracking.client import client


def ensure_registry_webhook(url: str, secret: str, events: tuple[str, ...], name: str = "quantmill") -> str:
    """Create (or, when one of that name exists, update) the MLflow registry webhook that
    posts events to url signed with secret; return its id. Needs a tracking server with a
    database backend: MLflow raises for other stores."""
    registry = client()
    for hook in registry.list_webhooks():
        if hook.name == name:
            return registry.update_webhook(hook.webhook_id, url=url, events=list(events), secret=secret, status="ACTIVE").webhook_id
    return registry.create_webhook(name=name, url=url, events=list(events), secret=secret).webhook_id
