"""One watch cycle: take the lock, read the state, monitor, decide, record, act, save.

    lines = run_cycle(spec, manual=True)     # what `mlrt watch SPEC --once --trigger manual` does

A retrain runs through the same driver as `mlrt run` (runtime.pipeline.driver.run_job), tagged
`mlrt.trigger`, `mlrt.trigger.evidence` (the monitoring run) and `mlrt.parent_version`; with
rollout.canary_weight > 0 a passing gate moves @challenger (serve.canary routes its share of
traffic to it), with 0 the serving alias as in `mlrt run`, under manual approval @candidate.
Each decision is an audit event written before its action, and a line of output.

Restart safety: the state is saved before a retrain starts (so its cooldown counts even if
the watcher dies) with the retrain marked under way; a watcher that finds a retrain marked
under way (its predecessor died: the lock was stale) starts that retrain once more, with the
same trigger and evidence, without counting it twice. The driver registers a version only at
its end, so a killed retrain leaves an MLflow run marked KILLED by the next run, no version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from runtime.errors import MlrtError
from runtime.governance import audit
from runtime.spec import JobSpec
from runtime.watch import decide as rules
from runtime.watch import evidence
from runtime.watch.state import HISTORY_KEEP, LockHeld, StateStore, WatchState

ROLLOUT_TAG = "mlrt.rollout"  # promoted | rejected: how the watcher ended a version's canary
DEFAULT_CHALLENGER = "challenger"


def challenger_alias(spec: JobSpec) -> str:
    return spec.serve.canary.alias if spec.serve.canary is not None else DEFAULT_CHALLENGER


def rollout_metric(spec: JobSpec) -> str:
    """What a canary is judged on: the quality trigger's metric, else the gate's, else the
    first of the task's metrics."""
    if spec.monitor.triggers.quality is not None:
        return spec.monitor.triggers.quality.metric
    if spec.evaluate.gate is not None:
        return spec.evaluate.gate.metric
    return spec.metrics[0]


def run_cycle(spec: JobSpec, manual: bool = False, address: str | None = None,
              echo: Callable[[str], None] = print, actor: str | None = None,
              now: datetime | None = None) -> rules.Decision:
    """One cycle; returns its decision (action `locked` when another watcher holds the lock)."""
    from runtime.registry import tracking

    now = now or datetime.now(UTC)
    store = StateStore.open(spec.storage, spec.name)
    try:
        note = store.acquire()
    except LockHeld as e:
        echo(f"[watch] {now:%Y-%m-%d %H:%M:%S} skipped: {e}")
        return rules.Decision("locked", str(e))
    try:
        if note:
            echo(f"[watch] {note}")
        tracking.use_store(spec.storage)
        state = store.load()
        actor = actor or "mlrt-watch"
        cycle = _Cycle(spec, store, address, echo, actor, now)
        state, decision = cycle.run(state, manual)
        state = replace(state, last_window_end=now.isoformat(), last_check=now.isoformat(),
                        cycles=state.cycles + 1,
                        history=(state.history + [{"time": now.isoformat(),
                                                   "action": decision.action,
                                                   "trigger": decision.trigger,
                                                   "reason": decision.reason}])[-HISTORY_KEEP:])
        store.save(state)
        return decision
    finally:
        store.release()


class _Cycle:
    def __init__(self, spec: JobSpec, store: StateStore, address: str | None,
                 echo: Callable[[str], None], actor: str, now: datetime):
        self.spec, self.store, self.address = spec, store, address
        self.echo, self.actor, self.now = echo, actor, now

    def say(self, decision: rules.Decision) -> None:
        trigger = f" ({decision.trigger})" if decision.trigger else ""
        self.echo(f"[watch] {self.now:%Y-%m-%d %H:%M:%S} {decision.action}{trigger}: "
                  f"{decision.reason}")

    def run(self, state: WatchState, manual: bool) -> tuple[WatchState, rules.Decision]:
        if state.retrain is not None:  # the watcher before this one died mid-retrain
            interrupted = state.retrain
            decision = rules.Decision(rules.RETRAIN, f"restarting the retrain started "
                                      f"{interrupted['started']} (its watcher died): "
                                      f"{interrupted['reason']}", interrupted["trigger"])
            self.say(decision)
            return self.retrain(state, decision, interrupted.get("evidence")), decision
        if state.pending is not None:
            state, decision = self.rollout(state)
            if manual and state.pending is not None:  # say why the asked-for retrain waits
                self.say(rules.decide_retrain(state, None, self.spec.monitor, self.now, True))
            return state, decision
        since = (datetime.fromisoformat(state.last_window_end) if state.last_window_end
                 else self.now - timedelta(seconds=self.spec.monitor.interval_s))
        report = self.monitor(since)
        state = rules.observe(state, report, self.spec.monitor, self.now)
        decision = rules.decide_retrain(state, report, self.spec.monitor, self.now, manual)
        self.say(decision)
        if decision.action != rules.RETRAIN:
            return state, decision
        state = rules.started_retrain(state, decision, evidence.evidence_run(report), self.now)
        self.store.save(state)  # before the retrain: its cooldown holds even if we die
        return self.retrain(state, decision, evidence.evidence_run(report)), decision

    def monitor(self, since: datetime) -> dict | None:
        if since >= self.now:
            return None
        return evidence.monitor_report(self.spec, since, self.now, self.address, self.echo)

    def retrain(self, state: WatchState, decision: rules.Decision,
                evidence_run: str | None) -> WatchState:
        from runtime.pipeline.decide import Retrain
        from runtime.pipeline.driver import run_job
        from runtime.registry import versions

        spec = self.spec
        champion = versions.version_by_alias(spec.name, spec.register.alias)
        weight = spec.canary_weight
        tags = {"mlrt.trigger": decision.trigger or "manual",
                "mlrt.trigger.evidence": evidence_run or "",
                "mlrt.trigger.reason": decision.reason[:500],
                "mlrt.parent_version": champion.version if champion else ""}
        try:
            with audit.recorded(spec.storage, spec.name, audit.RETRAIN_TRIGGERED, self.actor,
                                decision.reason, trigger=decision.trigger,
                                evidence_run=evidence_run, parent_version=tags[
                                    "mlrt.parent_version"] or None):
                extra = self._captured_rows()
                summary = run_job(spec, self.address, self.echo, actor=self.actor,
                                  retrain=Retrain(tags, challenger_alias(spec) if weight else None,
                                                  extra))
        except Exception as e:  # noqa: BLE001 - any failure is recorded; the champion serves on
            reason = str(e).splitlines()[0][:500] if str(e) else type(e).__name__
            self.echo(f"[watch] retrain failed ({type(e).__name__}): {reason}; @"
                      f"{spec.register.alias} untouched; no retry before the cooldown "
                      f"({spec.monitor.retrain.cooldown})")
            if not isinstance(e, MlrtError):
                import traceback

                self.echo(traceback.format_exc())
            return replace(state, retrain=None, last_failure={
                "time": self.now.isoformat(), "trigger": decision.trigger, "reason": reason})
        state = replace(state, retrain=None, last_failure=None)
        return self._after_gate(state, summary, champion.version if champion else None)

    def _captured_rows(self):
        if self.spec.monitor.retrain.data != "source+captures":
            return None
        from runtime.watch.captures import labeled_captures

        rows = labeled_captures(self.spec.storage, self.spec.name, self.spec.data.target)
        self.echo(f"[watch] appending {0 if rows is None else len(rows)} labeled captured rows "
                  "to the source")
        return rows

    def _after_gate(self, state: WatchState, summary, champion: str | None) -> WatchState:
        spec, version = self.spec, summary.version
        base = {"model": spec.name, "version": version, "champion": champion,
                "started": self.now.isoformat()}
        if spec.register.approval == "manual":
            audit.record_event(spec.storage, spec.name, audit.AWAITING_APPROVAL, self.actor,
                               "register.approval: manual", version=version,
                               alias=spec.register.alias)
            self.echo(f"[watch] v{version} waits for approval: mlrt models approve {spec.name} "
                      f"{version} --reason ...")
            return replace(state, pending={**base, "phase": "approval"})
        weight = spec.canary_weight
        if not weight:
            self.echo(f"[watch] v{version} promoted on the gate (rollout.canary_weight 0)")
            return state
        alias = challenger_alias(spec)
        audit.record_event(spec.storage, spec.name, audit.CANARY_STARTED, self.actor, None,
                           alias=alias, version=version, weight=weight, champion=champion)
        self.echo(f"[watch] canary started: v{version} @{alias} gets {weight:.0%} of traffic; "
                  f"decided after {spec.monitor.rollout.min_labeled} labeled requests")
        return replace(state, pending={**base, "phase": "canary", "alias": alias,
                                       "weight": weight})

    def rollout(self, state: WatchState) -> tuple[WatchState, rules.Decision]:
        from runtime.governance.approvals import APPROVAL_TAG
        from runtime.registry import versions

        spec, pending = self.spec, state.pending
        info = versions.get_version(spec.name, pending["version"])
        champion = versions.version_by_alias(spec.name, spec.register.alias)
        if champion is not None and champion.version == pending["version"]:
            decision = rules.Decision(rules.DONE, f"v{pending['version']} is @"
                                      f"{spec.register.alias} already")
        elif info.tags.get(versions.ROLLED_BACK_TAG) or self._moved_on(pending):
            decision = rules.Decision(rules.DONE, f"v{pending['version']} was rolled back or "
                                      f"replaced at @{pending.get('alias')} outside the watcher")
        else:
            report = (self.monitor(datetime.fromisoformat(pending["started"]))
                      if pending["phase"] == "canary" else None)
            decision = rules.decide_rollout(pending, report, spec.monitor.rollout,
                                            rollout_metric(spec), info.tags.get(APPROVAL_TAG))
        self.say(decision)
        if decision.action == rules.PROMOTE:
            self._promote(pending, decision)
        elif decision.action == rules.ROLLBACK:
            self._reject(pending, decision)
        if decision.action in (rules.PROMOTE, rules.ROLLBACK, rules.DONE):
            return replace(state, pending=None, drift_windows=0), decision
        return state, decision

    def _moved_on(self, pending: dict) -> bool:
        """The canary alias now points at another version (moved by hand)."""
        from runtime.registry import versions

        if pending["phase"] != "canary":
            return False
        holder = versions.version_by_alias(self.spec.name, pending["alias"])
        return holder is not None and holder.version != pending["version"]

    def _promote(self, pending: dict, decision: rules.Decision) -> None:
        from runtime.registry import tracking, versions

        spec, version = self.spec, pending["version"]
        with audit.recorded(spec.storage, spec.name, audit.CANARY_ENDED, self.actor,
                            decision.reason, alias=pending["alias"], version=version,
                            outcome="promoted", live=decision.numbers):
            note = audit.Note(spec.storage, self.actor, decision.reason, audit.PROMOTED,
                              {"cause": "canary", "version": version})
            versions.move_alias(spec.name, spec.register.alias, version, note)
            tracking.set_version_tag(spec.name, version, ROLLOUT_TAG, "promoted")

    def _reject(self, pending: dict, decision: rules.Decision) -> None:
        """The challenger gets no more traffic (serve.canary skips a rolled-back version)
        and is tagged rejected; the serving alias never moved."""
        from runtime.registry import tracking, versions

        spec, version = self.spec, pending["version"]
        with audit.recorded(spec.storage, spec.name, audit.CANARY_ENDED, self.actor,
                            decision.reason, alias=pending["alias"], version=version,
                            outcome="rolled_back", live=decision.numbers):
            tracking.set_version_tag(spec.name, version, versions.ROLLED_BACK_TAG, "true")
            tracking.set_version_tag(spec.name, version, ROLLOUT_TAG, "rejected")
