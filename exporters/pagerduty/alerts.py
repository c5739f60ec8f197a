"""The alert state machine of one rule, as Prometheus runs it: pending → firing → resolved.

A group whose condition holds becomes a pending alert; once it has held for `for` (at once with
`for: 0`) the alert fires and one `trigger` event is due. While it keeps holding nothing more is
sent (no repeated triggers for one incident). When it stops holding, or the group has no value
any more, a pending alert is dropped silently and a firing one is resolved: one `resolve` event
with the same dedup_key. An event is only considered sent once the sending queue has taken it,
so a full queue delays it to the next evaluation instead of losing it; a resolve still waiting
is cancelled if the condition holds again before it could be queued (the incident stays open).
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporters.pagerduty.evaluator import Group, Observation


class State(enum.Enum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVING = "resolving"  # firing, the condition stopped holding, the resolve is not queued yet


@dataclass
class Alert:
    group: Group
    active_since: float           # when the condition first held (the clock's time)
    observation: Observation
    state: State = State.PENDING
    fired_at: float | None = None
    triggered: bool = False       # the trigger event is in the sending queue (or sent)


@dataclass
class RuleState:
    """The alerts of one rule, by group."""

    alerts: dict[Group, Alert] = field(default_factory=dict)

    def firing(self) -> int:
        return sum(1 for a in self.alerts.values() if a.state is State.FIRING)

    def step(self, observations: Mapping[Group, Observation], now: float, hold: float,
             limit: int) -> tuple[list[Alert], list[Alert], int]:
        """Apply one evaluation. Returns (alerts whose trigger is due, alerts whose resolve is due,
        groups that held but got no alert because the rule already has `limit` alerts)."""
        alerts = self.alerts
        suppressed = 0
        for group, obs in observations.items():
            alert = alerts.get(group)
            if alert is not None:
                alert.observation = obs
                if obs.holds and alert.state is State.RESOLVING:
                    alert.state = State.FIRING  # the incident is still open: nothing to send
            elif obs.holds:
                if limit and len(alerts) >= limit:
                    suppressed += 1
                    continue
                alert = alerts[group] = Alert(group, now, obs)
            else:
                continue
            if obs.holds and alert.state is State.PENDING and now - alert.active_since >= hold:
                alert.state, alert.fired_at = State.FIRING, now
        for group, alert in list(alerts.items()):
            obs_now = observations.get(group)
            if obs_now is not None and obs_now.holds:
                continue
            if alert.state is State.PENDING or not alert.triggered:
                del alerts[group]  # never announced: nothing to resolve
            else:
                alert.state = State.RESOLVING
        triggers = [a for a in alerts.values() if a.state is State.FIRING and not a.triggered]
        resolves = [a for a in alerts.values() if a.state is State.RESOLVING]
        return triggers, resolves, suppressed

    def resolved(self, alert: Alert) -> None:
        """The resolve event of `alert` is queued: the alert is over."""
        self.alerts.pop(alert.group, None)
