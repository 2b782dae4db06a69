"""Alerts that reach people: evaluate the rules into firing/resolved deliveries, then POST them to webhooks.

Two steps, so that a slow or dead receiver never touches counting. `alert_rules_evaluate` (the worker's
housekeeping every minute, and `check_alerts`) measures each enabled rule (analytics.selectors
`alert_rule_observe`), moves its states and writes one AlertDelivery row per message, all in one
transaction. `alert_deliveries_send` (a thread of its own in the worker, and `check_alerts`) POSTs the
due rows with a strict timeout and records each attempt; failures are retried with a doubling backoff.
Delivery is at least once: a sender that dies between the POST and its record sends it again.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from analytics.models import WEBHOOK_SCHEMES, AlertDelivery, AlertEvaluation, AlertKind, AlertRule, AlertState
from analytics.selectors import AlertObservation, alert_rule_observe
from entities.models import Entity
from streams.redis import REDIS_ERRORS

logger = logging.getLogger(__name__)

# One evaluation at a time across processes (the worker's chore and a cron's check_alerts): the second
# skips instead of waiting, so the worker's housekeeping never waits on another evaluator.
EVALUATE_LOCK = 0x616C657274  # "alert"
# Due deliveries taken per send; the rest wait for the next round (every few seconds in the worker).
SEND_BATCH = 100
# A response body is read only this far: enough for an error message, never a large download.
RESPONSE_READ_BYTES = 2048
# 408 and 429 ask to come back later; every other 4xx says the message itself is refused.
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


@dataclass
class EvaluationOutcome:
    """What one evaluation did: messages written per state, rules it could not measure, and whether it ran."""

    ran: bool = True
    rules: int = 0
    firing: int = 0
    resolved: int = 0
    suppressed: int = 0  # conditions that became true within their rule's cooldown
    undeliverable: int = 0  # messages with no webhook configured: nothing is written
    unavailable: list[str] = field(default_factory=list)


@dataclass
class SendOutcome:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def alert_payload(
    *, rule: AlertRule, state: str, text: str, entity: Entity | None, value: float | None, now: datetime
) -> dict:
    """The JSON body of an alert: `text` alone makes it a Slack incoming-webhook message."""
    payload = {
        "rule": rule.name,
        "kind": rule.kind,
        "state": state,
        "text": f"[{state.upper()}] {rule.name}: {text}",
        "value": value,
        "threshold": rule.threshold,
        "at": now.isoformat(),
    }
    if rule.per_entity:
        payload["entity_id"] = str(entity.pk) if entity else None
        payload["entity_name"] = entity.name if entity else None
    return payload


def _delivery_add(
    *, rule: AlertRule, state: str, text: str, entity: Entity | None, value, now: datetime, outcome: EvaluationOutcome
) -> None:
    url = rule.webhook_url or settings.ALERT_WEBHOOK_URL
    if not url:
        outcome.undeliverable += 1
        return
    AlertDelivery.objects.create(
        rule=rule,
        entity=entity,
        state=state,
        url=url,
        payload=alert_payload(rule=rule, state=state, text=text, entity=entity, value=value, now=now),
        created_at=now,
        next_attempt_at=now,
    )
    if state == AlertDelivery.State.FIRING:
        outcome.firing += 1
    else:
        outcome.resolved += 1


_ENTITY_FIELDS = ("id", "name", "entity_type")
_STATE_FIELDS = (
    "id",
    "rule_id",
    "firing",
    "value",
    "baseline",
    "fired_at",
    "resolved_at",
    *(f"entity__{name}" for name in _ENTITY_FIELDS),
)


def _rule_evaluate(*, rule: AlertRule, now: datetime, pinned: bool, outcome: EvaluationOutcome) -> None:
    # Only what the messages name: an entity's data and text are large.
    states = {state.entity_id: state for state in rule.states.select_related("entity").only(*_STATE_FIELDS)}
    whole = states.get(None)
    observations: list[AlertObservation] = alert_rule_observe(
        rule=rule, now=now if pinned else None, baseline=whole.baseline if whole else None
    )
    observed = {observation.entity_id: observation for observation in observations}
    entities = Entity.objects.only(*_ENTITY_FIELDS).in_bulk([key for key in observed if key is not None])
    cooldown = timedelta(seconds=rule.cooldown_seconds)
    for key, observation in observed.items():
        entity = entities.get(key) if key is not None else None
        if key is not None and entity is None:
            continue  # deleted since it was measured
        state = states.get(key) or AlertState(rule=rule, entity=entity)
        # Written only when something moved: most evaluations change nothing and write nothing.
        changed = state.pk is None
        # dead_letters_grew counts from the last count seen while clear.
        clear = not state.firing and not observation.active
        if rule.kind == AlertKind.DEAD_LETTERS_GREW and clear and state.baseline != observation.value:
            state.baseline, changed = observation.value, True
        if observation.active and not state.firing:
            if state.fired_at is not None and now - state.fired_at < cooldown:
                outcome.suppressed += 1
            else:
                state.firing, state.fired_at, state.value, changed = True, now, observation.value, True
                _delivery_add(
                    rule=rule,
                    state=AlertDelivery.State.FIRING,
                    text=observation.text,
                    entity=entity,
                    value=observation.value,
                    now=now,
                    outcome=outcome,
                )
        elif not observation.active and state.firing:
            state.firing, state.resolved_at, state.value, changed = False, now, observation.value, True
            _delivery_add(
                rule=rule,
                state=AlertDelivery.State.RESOLVED,
                text=observation.text,
                entity=entity,
                value=observation.value,
                now=now,
                outcome=outcome,
            )
        if changed:
            state.save()
    # A per-entity rule observes only the entities whose condition holds: every other firing one cleared.
    for key, state in states.items():
        if key is None or key in observed or not state.firing:
            continue
        state.firing, state.resolved_at = False, now
        state.save(update_fields=["firing", "resolved_at"])
        entity = state.entity
        _delivery_add(
            rule=rule,
            state=AlertDelivery.State.RESOLVED,
            text=f"{entity.name} ({entity.entity_type}) no longer matches",
            entity=entity,
            value=None,
            now=now,
            outcome=outcome,
        )


def alert_rules_evaluate(*, now: datetime | None = None) -> EvaluationOutcome:
    """Evaluate every enabled rule once, as of `now`, writing the messages to send (one transaction).

    A rule that stays true alerts once (firing) and once more when it clears (resolved); a rule that
    becomes true within `cooldown_seconds` of its last firing does not alert. A rule whose measurement
    needs an unreachable Redis keeps its state and is listed in `unavailable`. When another process is
    evaluating at the same moment, returns at once with `ran` false.
    """
    # Unpinned, the measurements may read what the worker keeps current (the refresh queue's snapshot).
    pinned = now is not None
    now = now or timezone.now()
    outcome = EvaluationOutcome()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [EVALUATE_LOCK])
            if not cursor.fetchone()[0]:
                return EvaluationOutcome(ran=False)
        for rule in AlertRule.objects.filter(enabled=True):
            try:
                with transaction.atomic():
                    _rule_evaluate(rule=rule, now=now, pinned=pinned, outcome=outcome)
            except REDIS_ERRORS as error:
                logger.warning("alert rule %s not evaluated: Redis unavailable (%s)", rule.name, error)
                outcome.unavailable.append(rule.name)
                continue
            outcome.rules += 1
        AlertRule.objects.filter(enabled=True).exclude(name__in=outcome.unavailable).update(last_evaluated_at=now)
        AlertEvaluation.objects.update_or_create(pk=1, defaults={"evaluated_at": now})
    if outcome.firing or outcome.resolved or outcome.unavailable:
        logger.info(
            "alerts: %d rules evaluated, %d firing, %d resolved, %d in cooldown, %d without a webhook, unavailable %s",
            outcome.rules,
            outcome.firing,
            outcome.resolved,
            outcome.suppressed,
            outcome.undeliverable,
            outcome.unavailable or "none",
        )
    return outcome


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Only the configured URL is ever called: a redirect is reported as the response it is."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# No proxy from the environment either: the POST goes to the configured URL itself.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def webhook_post(*, url: str, payload: dict, timeout: float) -> tuple[int | None, str]:
    """POST `payload` as JSON to `url`: (status code or None, error text; empty when it was a 2xx).

    `timeout` bounds the connection and each read. Never raises for the receiver's failures.
    """
    if urlsplit(url).scheme not in WEBHOOK_SCHEMES:
        return None, f"not an http(s) URL: {url[:100]}"
    request = urllib.request.Request(  # the scheme is http or https (checked above)
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "mandate-wizard-alerts"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(RESPONSE_READ_BYTES)
            return response.status, ""
    except urllib.error.HTTPError as error:
        body = error.read(RESPONSE_READ_BYTES).decode(errors="replace").strip()
        return error.code, f"HTTP {error.code} {error.reason}" + (f": {body[:300]}" if body else "")
    except (urllib.error.URLError, OSError, ValueError) as error:  # refused, unreachable, timed out, bad URL
        reason = getattr(error, "reason", error)
        return None, f"{type(reason).__name__}: {reason}"[:500]


def alert_delivery_backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: ALERT_DELIVERY_BACKOFF_SECONDS, doubling each time."""
    return timedelta(seconds=settings.ALERT_DELIVERY_BACKOFF_SECONDS * 2 ** (attempts - 1))


def _deliveries_take(*, now: datetime, timeout: float) -> list[AlertDelivery]:
    """Claim the due deliveries: each rule/entity's oldest pending one only (firing before resolved), and
    push their next attempt past a lease long enough to try them all one after the other, so that a
    concurrent sender does not take them too."""
    with transaction.atomic():
        pending = list(
            AlertDelivery.objects.select_for_update(skip_locked=True)
            .filter(status=AlertDelivery.Status.PENDING)
            .order_by("id")[: SEND_BATCH * 5]
        )
        seen, due = set(), []
        for delivery in pending:
            key = (delivery.rule_id, delivery.entity_id)
            if key in seen:
                continue
            seen.add(key)
            if delivery.next_attempt_at <= now and len(due) < SEND_BATCH:
                due.append(delivery)
        lease = timedelta(seconds=len(due) * 2 * timeout + 30)
        AlertDelivery.objects.filter(pk__in=[delivery.pk for delivery in due]).update(next_attempt_at=now + lease)
    return due


def alert_deliveries_send(*, now: datetime | None = None, timeout: float | None = None) -> SendOutcome:
    """POST every due delivery once and record the attempt: sent on a 2xx; otherwise retried after a
    backoff until ALERT_DELIVERY_MAX_ATTEMPTS, except a refusing 4xx or a redirect, which fail at once.

    Only the URL written on the delivery (the rule's or ALERT_WEBHOOK_URL when it was evaluated) is called.
    """
    now = now or timezone.now()
    timeout = settings.ALERT_WEBHOOK_TIMEOUT if timeout is None else timeout
    outcome = SendOutcome()
    for delivery in _deliveries_take(now=now, timeout=timeout):
        status_code, error = webhook_post(url=delivery.url, payload=delivery.payload, timeout=timeout)
        attempts = delivery.attempts + 1
        update = {
            "attempts": F("attempts") + 1,
            "last_attempt_at": now,
            "last_status_code": status_code,
            "last_error": error,
        }
        if status_code is not None and 200 <= status_code < 300:
            update.update(status=AlertDelivery.Status.SENT, sent_at=now)
            outcome.sent += 1
        elif (
            status_code is not None and 300 <= status_code < 500 and status_code not in _RETRYABLE_CLIENT_ERRORS
        ) or attempts >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
            update["status"] = AlertDelivery.Status.FAILED
            outcome.failed += 1
            logger.warning(
                "alert %s to %s failed for good after %d attempts: %s", delivery.pk, delivery.url, attempts, error
            )
        else:
            update["next_attempt_at"] = now + alert_delivery_backoff(attempts)
            outcome.retrying += 1
            logger.info("alert %s to %s: attempt %d failed (%s); retrying", delivery.pk, delivery.url, attempts, error)
        AlertDelivery.objects.filter(pk=delivery.pk).update(**update)
    return outcome


@dataclass
class CheckOutcome:
    evaluation: EvaluationOutcome
    delivery: SendOutcome


def alerts_check(*, now: datetime | None = None) -> CheckOutcome:
    """One evaluation, then one round of sending (what `check_alerts` does)."""
    return CheckOutcome(evaluation=alert_rules_evaluate(now=now), delivery=alert_deliveries_send(now=now))


def alert_deliveries_prune(*, now: datetime | None = None) -> int:
    """Delete sent and failed deliveries created before ALERT_DELIVERY_RETENTION_DAYS; return how many.

    Pending deliveries are kept whatever their age: they are still owed to a receiver.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.ALERT_DELIVERY_RETENTION_DAYS)
    deleted, _ = (
        AlertDelivery.objects.filter(created_at__lt=cutoff).exclude(status=AlertDelivery.Status.PENDING).delete()
    )
    return deleted
