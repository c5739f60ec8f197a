"""The alert state machine: `for`, one trigger per incident, resolve, limits, and a full queue."""
from __future__ import annotations

from exporters.pagerduty.alerts import RuleState, State
from exporters.pagerduty.evaluator import Observation

HOLDS = Observation(1.0, True)
CLEAR = Observation(0.0, False)
G = ("g",)


def run(state: RuleState, obs: dict[tuple[str, ...], Observation], now: float, hold: float = 0.0,
        limit: int = 0) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], int]:
    """One step; pretends every due event was queued. Returns the groups triggered and resolved."""
    triggers, resolves, suppressed = state.step(obs, now, hold, limit)
    for a in triggers:
        a.triggered = True
    for a in resolves:
        state.resolved(a)
    return [a.group for a in triggers], [a.group for a in resolves], suppressed


def test_pending_until_the_condition_has_held_for_the_hold_duration() -> None:
    s = RuleState()
    assert run(s, {G: HOLDS}, 0.0, hold=60.0) == ([], [], 0)
    assert s.alerts[G].state is State.PENDING
    assert run(s, {G: HOLDS}, 59.0, hold=60.0) == ([], [], 0)
    assert run(s, {G: HOLDS}, 60.0, hold=60.0) == ([G], [], 0)  # held 60 s: fires, one trigger
    assert s.alerts[G].state is State.FIRING and s.alerts[G].fired_at == 60.0
    assert run(s, {G: HOLDS}, 120.0, hold=60.0) == ([], [], 0)  # no repeated trigger
    assert s.firing() == 1


def test_for_zero_fires_at_the_first_evaluation() -> None:
    s = RuleState()
    assert run(s, {G: HOLDS}, 0.0) == ([G], [], 0)


def test_a_pending_alert_that_stops_holding_is_dropped_without_an_event() -> None:
    s = RuleState()
    run(s, {G: HOLDS}, 0.0, hold=60.0)
    assert run(s, {G: CLEAR}, 30.0, hold=60.0) == ([], [], 0)
    assert s.alerts == {}
    # and the hold starts over
    run(s, {G: HOLDS}, 40.0, hold=60.0)
    assert run(s, {G: HOLDS}, 90.0, hold=60.0) == ([], [], 0)
    assert run(s, {G: HOLDS}, 100.0, hold=60.0) == ([G], [], 0)


def test_firing_resolves_once_when_the_condition_stops_or_the_group_disappears() -> None:
    for after in ({G: CLEAR}, {}):
        s = RuleState()
        run(s, {G: HOLDS}, 0.0)
        assert run(s, after, 10.0) == ([], [G], 0)
        assert s.alerts == {}
        assert run(s, after, 20.0) == ([], [], 0)


def test_groups_are_independent() -> None:
    s = RuleState()
    a, b = ("a",), ("b",)
    assert run(s, {a: HOLDS, b: CLEAR}, 0.0) == ([a], [], 0)
    assert run(s, {a: HOLDS, b: HOLDS}, 10.0) == ([b], [], 0)
    assert run(s, {a: CLEAR, b: HOLDS}, 20.0) == ([], [a], 0)
    assert s.firing() == 1


def test_limit_caps_new_alerts_and_counts_the_rest() -> None:
    s = RuleState()
    obs = {(str(i),): HOLDS for i in range(5)}
    triggered, _, suppressed = run(s, obs, 0.0, limit=3)
    assert len(triggered) == 3 and suppressed == 2
    assert run(s, obs, 10.0, limit=3)[2] == 2  # still at the limit: the same two get nothing


def test_a_trigger_the_queue_could_not_take_is_due_again_next_round() -> None:
    s = RuleState()
    triggers, _, _ = s.step({G: HOLDS}, 0.0, 0.0, 0)
    assert [a.group for a in triggers] == [G]  # not marked as queued
    triggers, _, _ = s.step({G: HOLDS}, 10.0, 0.0, 0)
    assert [a.group for a in triggers] == [G]
    # never announced: nothing to resolve when it stops
    assert s.step({G: CLEAR}, 20.0, 0.0, 0) == ([], [], 0)
    assert s.alerts == {}


def test_a_resolve_still_waiting_is_cancelled_when_the_condition_holds_again() -> None:
    s = RuleState()
    run(s, {G: HOLDS}, 0.0)
    _, resolves, _ = s.step({G: CLEAR}, 10.0, 0.0, 0)  # the queue refuses it: not marked resolved
    assert [a.group for a in resolves] == [G] and s.alerts[G].state is State.RESOLVING
    triggers, resolves, _ = s.step({G: HOLDS}, 20.0, 0.0, 0)
    assert (triggers, resolves) == ([], [])  # the incident is still open in PagerDuty: nothing to send
    assert s.alerts[G].state is State.FIRING


def test_the_latest_observation_is_kept_for_the_events() -> None:
    s = RuleState()
    run(s, {G: Observation(7.0, True)}, 0.0)
    run(s, {G: Observation(9.0, True)}, 10.0)
    assert s.alerts[G].observation.value == 9.0
