"""Alert delivery through Prefect notification blocks, and their setup.

The monitor sends each alert with ``block.notify(body=text, subject=event_id)``. Any notification
block works (Slack, Teams, a custom webhook…); :func:`save_webhook_block` creates the project's
default, a ``CustomWebhookNotificationBlock`` that POSTs Slack-compatible JSON::

    {"text": "<the alert>", "event_id": "<check:subject#seq>", "source": "coin-predict"}

``event_id`` is what a receiver de-duplicates on (a monitor that crashed between a send and its
record re-sends the same id); the alert's stable key is the part before ``#``.

Flow-run notifications (Failed / Crashed runs) are a server-side Prefect feature: a flow-run
notification policy naming the same block. :func:`ensure_run_notifications` creates it once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from prefect import get_client
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock, NotificationBlock
from prefect.client.schemas.filters import FlowRunNotificationPolicyFilter

from coin_core.alerts import OutboxMessage
from coin_core.errors import ConfigError
from coin_core.monitor import Sender

__all__ = [
    "WEBHOOK_PAYLOAD",
    "RUN_STATES",
    "RUN_MESSAGE",
    "parse_block_ref",
    "check_webhook_url",
    "load_sender",
    "save_webhook_block",
    "ensure_run_notifications",
]

WEBHOOK_PAYLOAD: dict[str, Any] = {"text": "{{body}}", "event_id": "{{subject}}", "source": "coin-predict"}
RUN_STATES = ["Failed", "Crashed"]
RUN_MESSAGE = ("[coin-predict] flow run {flow_run_name} of {flow_name} entered {flow_run_state_name}: "
               "{flow_run_state_message} ({flow_run_url})")
_REF = re.compile(r"^([a-z0-9-]{1,64})/([A-Za-z0-9_-]{1,64})$")


def parse_block_ref(ref: str) -> tuple[str, str]:
    """``type-slug/name`` -> (slug, name), or a ConfigError saying what a reference looks like."""
    found = _REF.match(ref.strip())
    if not found:
        raise ConfigError(f"invalid notification block {ref!r}: expected 'type-slug/name', "
                          "e.g. custom-webhook/coin-predict-alerts or slack-webhook/ops")
    return found.group(1), found.group(2)


def check_webhook_url(url: str) -> str:
    """An absolute http(s) URL with a host and no spaces; anything else is a ConfigError."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or any(c.isspace() for c in url):
        raise ConfigError(f"invalid webhook URL {parts.scheme + '://' + (parts.hostname or '') if parts.scheme else url[:40]!r}: "
                          "expected http(s)://host/path")
    return url


def _load_block(ref: str) -> NotificationBlock:
    parse_block_ref(ref)
    try:
        block = Block.load(ref)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"notification block {ref!r} not found on the Prefect server: create it in the UI "
                          "(Blocks) or with `python -m flows.setup --alert-webhook URL`") from exc
    if not isinstance(block, NotificationBlock):
        raise ConfigError(f"block {ref!r} is a {type(block).__name__}, not a notification block")
    return block


def load_sender(ref: str | None) -> Sender | None:
    """The monitor's sender for block ``ref`` (None: alerts go to the run log only)."""
    if ref is None:
        return None
    block = _load_block(ref)

    def send(msg: OutboxMessage) -> None:
        block.notify(msg.text, subject=msg.event_id)

    return send


def save_webhook_block(name: str, url: str, overwrite: bool = True) -> str:
    """Create (or update) the project's webhook block; returns its reference ``custom-webhook/name``."""
    ref = f"custom-webhook/{name}"
    parse_block_ref(ref)
    # The URL of a Slack-style webhook is its credential: kept in the block's secret values, so
    # the UI, the API and the logs show "{{url}}" instead.
    block = CustomWebhookNotificationBlock(name=name, url="{{url}}", json_data=WEBHOOK_PAYLOAD,
                                           secrets={"url": check_webhook_url(url)})
    block.save(name, overwrite=overwrite)
    return ref


async def _ensure_policy(block_id: UUID, tags: list[str]) -> UUID:
    async with get_client() as client:
        # The filter's default is "inactive only" (Prefect 2.20): ask for every policy.
        policies = await client.read_flow_run_notification_policies(FlowRunNotificationPolicyFilter(is_active=None))
        for policy in policies:
            if policy.block_document_id == block_id and sorted(policy.state_names) == sorted(RUN_STATES):
                if not policy.is_active or sorted(policy.tags) != sorted(tags):
                    await client.update_flow_run_notification_policy(policy.id, is_active=True, tags=tags)
                return policy.id
        return await client.create_flow_run_notification_policy(
            block_document_id=block_id, state_names=RUN_STATES, tags=tags, message_template=RUN_MESSAGE)


def ensure_run_notifications(ref: str, tags: list[str] | None = None) -> UUID:
    """A flow-run notification policy: Failed/Crashed runs (of ``tags``, all if empty) -> block."""
    block = _load_block(ref)
    block_id = block._block_document_id
    if block_id is None:
        raise ConfigError(f"block {ref!r} has no server document id")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # safe inside a running loop too
        return pool.submit(asyncio.run, _ensure_policy(block_id, list(tags or []))).result()
