"""The watcher's decisions: pure functions of the monitoring report, the state and the clock,
so every rule is unit-tested without Ray, MLflow or a served model.

    state = observe(state, report, monitor)                 # window counters
    decision = decide_retrain(state, report, monitor, now, manual=False)
    decision = decide_rollout(state.pending, report, rollout, metric, approval_state)

Retrain triggers, in order: manual (`--trigger manual`), quality (the champion's live metric
past `below`/`above` on >= min_labels labeled rows), drift (in min_windows consecutive
windows), schedule (a cron time passed since the last check). Automatic triggers wait for the
cooldown after the last retrain (failed or not: a failing retrain is not retried before it)
and for max_per_day; a manual one is a person's explicit request and is not held back. No
retrain starts while a rollout is pending.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from runtime.spec.cron import due, parse_cron
from runtime.spec.monitor import LOWER_IS_BETTER, Monitor, Rollout
from runtime.watch.evidence import Quality, champion_quality, drift_verdict, version_quality
from runtime.watch.state import WatchState

NONE, RETRAIN, WAIT, PROMOTE, ROLLBACK, DONE = ("none", "retrain", "wait", "promote",
                                               "rollback", "done")


@dataclass(frozen=True)
class Decision:
    action: str  # none | retrain | wait | promote | rollback | done
    reason: str
    trigger: str | None = None  # retrain: manual | quality | drift | schedule
    held: bool = False  # a trigger fired but cooldown / max_per_day held it back
    numbers: dict | None = None  # rollout: the live numbers it was decided on


def observe(state: WatchState, report: dict | None, monitor: Monitor,
            now: datetime) -> WatchState:
    """Count the window: drift adds one, a verdict of no drift resets, no verdict (empty
    window, too few rows, no monitor) leaves the count as it was."""
    verdict = drift_verdict(report)
    windows = state.drift_windows
    if verdict is True:
        windows += 1
    elif verdict is False:
        windows = 0
    day = now.date().isoformat()
    today = state.retrains_today if state.retrain_day == day else 0
    return replace(state, drift_windows=windows, retrains_today=today, retrain_day=day)


def _trigger(state: WatchState, report: dict | None, monitor: Monitor, now: datetime,
             manual: bool) -> tuple[str | None, str]:
    triggers = monitor.triggers
    if manual:
        return "manual", "retrain asked for by hand (--trigger manual)"
    quality = triggers.quality
    if quality is not None:
        live = champion_quality(report)
        value = live.metrics.get(quality.metric) if live else None
        if live is not None and live.labeled >= quality.min_labels and value is not None:
            if quality.below is not None and value < quality.below:
                return "quality", (f"live {quality.metric} {value:.4f} < {quality.below} on "
                                   f"{live.labeled} labeled rows")
            if quality.above is not None and value > quality.above:
                return "quality", (f"live {quality.metric} {value:.4f} > {quality.above} on "
                                   f"{live.labeled} labeled rows")
    if triggers.drift is not None and state.drift_windows >= triggers.drift.min_windows:
        return "drift", (f"drift in {state.drift_windows} consecutive windows (min_windows "
                         f"{triggers.drift.min_windows})")
    if triggers.schedule is not None and state.last_check is not None and due(
            parse_cron(triggers.schedule), datetime.fromisoformat(state.last_check), now):
        return "schedule", f"schedule '{triggers.schedule}' is due"
    return None, "no trigger"


def decide_retrain(state: WatchState, report: dict | None, monitor: Monitor, now: datetime,
                   manual: bool = False) -> Decision:
    if state.pending is not None:
        return Decision(WAIT, f"v{state.pending['version']} is in rollout "
                              f"({state.pending['phase']}); no retrain before it ends")
    trigger, why = _trigger(state, report, monitor, now, manual)
    if trigger is None:
        return Decision(NONE, why)
    if trigger != "manual":
        held = _held(state, monitor, now)
        if held:
            return Decision(NONE, f"{why}, but {held}", trigger, held=True)
    return Decision(RETRAIN, why, trigger)


def _held(state: WatchState, monitor: Monitor, now: datetime) -> str | None:
    retrain = monitor.retrain
    if state.last_retrain is not None:
        ready = datetime.fromisoformat(state.last_retrain) + timedelta(seconds=retrain.cooldown_s)
        if now < ready:
            return f"the cooldown ({retrain.cooldown}) runs until {ready.isoformat()}"
    if state.retrain_day == now.date().isoformat() and \
            state.retrains_today >= retrain.max_per_day:
        return f"{state.retrains_today} retrains today already (max_per_day {retrain.max_per_day})"
    return None


def started_retrain(state: WatchState, decision: Decision, evidence: str | None,
                    now: datetime) -> WatchState:
    """The state once a retrain starts: counters reset (the new model needs fresh evidence),
    cooldown and the day's count from now on, the retrain remembered until it ends."""
    day = now.date().isoformat()
    today = state.retrains_today if state.retrain_day == day else 0
    return replace(state, drift_windows=0, last_retrain=now.isoformat(), retrain_day=day,
                   retrains_today=today + 1,
                   retrain={"trigger": decision.trigger, "reason": decision.reason,
                            "evidence": evidence, "started": now.isoformat()})


def better_or_equal(metric: str, challenger: float, champion: float, max_drop: float) -> bool:
    """challenger >= champion - max_drop (<= champion + max_drop for error metrics)."""
    if metric in LOWER_IS_BETTER:
        return challenger <= champion + max_drop
    return challenger >= champion - max_drop


def decide_rollout(pending: dict, report: dict | None, rollout: Rollout, metric: str,
                   approval: str | None = None) -> Decision:
    """A pending rollout. phase approval: wait for `mlrt models approve/reject` (approval is
    the version's mlrt.approval tag). phase canary: once the challenger has min_labeled
    labeled requests, promote it when its live metric is >= the champion's - max_quality_drop,
    else roll it back."""
    version = pending["version"]
    if pending["phase"] == "approval":
        if approval == "pending":
            return Decision(WAIT, f"v{version} passed its gate and waits for approval "
                                  f"(mlrt models approve {pending.get('model', 'NAME')} "
                                  f"{version} --reason ...)")
        return Decision(DONE, f"v{version} was {approval or 'decided'} by a person")
    challenger = version_quality(report, version)
    champion = version_quality(report, pending["champion"]) if pending.get("champion") \
        else None
    labeled = challenger.labeled if challenger else 0
    if labeled < rollout.min_labeled:
        return Decision(WAIT, f"canary v{version}: {labeled} of {rollout.min_labeled} labeled "
                              "requests so far")
    value = challenger.metrics.get(metric)
    if value is None:
        return Decision(WAIT, f"canary v{version}: no live {metric} yet")
    base = _value(champion, metric)
    numbers = {"metric": metric, "challenger": value, "champion": base, "labeled": labeled,
               "champion_labeled": champion.labeled if champion else 0,
               "max_quality_drop": rollout.max_quality_drop}
    if base is None:
        return Decision(PROMOTE, f"canary v{version}: live {metric} {value:.4f} on {labeled} "
                                 "labels; the champion has no labeled requests to compare",
                        numbers=numbers)
    if better_or_equal(metric, value, base, rollout.max_quality_drop):
        return Decision(PROMOTE, f"canary v{version}: live {metric} {value:.4f} vs champion "
                                 f"{base:.4f} (max drop {rollout.max_quality_drop}) on "
                                 f"{labeled} labels", numbers=numbers)
    return Decision(ROLLBACK, f"canary v{version}: live {metric} {value:.4f} is worse than the "
                              f"champion's {base:.4f} by more than {rollout.max_quality_drop}",
                    numbers=numbers)


def _value(quality: Quality | None, metric: str) -> float | None:
    return quality.metrics.get(metric) if quality is not None and quality.labeled else None
