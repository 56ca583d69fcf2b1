"""Decides every journaled signal, in journal order, exactly once.

The engine reads signals after its cursor, builds each service's state from the
journal (past remediations, the circuit breaker) and live facts (replicas), asks the
pure ``decide`` function, and writes the decisions, the remediations they open and
the new cursor in one transaction. A crash between decide and write re-decides the
same signals on restart; ids derived from the signal id make that write idempotent.

One engine task decides serially, so two signals for one service never race: in
an alert storm the first opens a remediation and the rest see it as in progress.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.outcomes import outcome_event
from remediator.domain.plans import ActionKind, Decision, NoAction, NoActionReason, Plan, explain
from remediator.domain.record import RemediationStatus as RecordStatus
from remediator.domain.record import stage_for
from remediator.domain.rules import (
    CircuitState,
    DeployRecord,
    MigrationRecord,
    RemediationRecord,
    RemediationStatus,
    RulePack,
    ServiceState,
    circuit_trip_reason,
    decide,
    deploy_record_from_signal,
    migration_record_from_signal,
)
from remediator.domain.signals import Signal, Source, Status
from remediator.engine.notify import notice_messages
from remediator.ports import (
    DecisionRecord,
    Journal,
    NewRemediation,
    OutboxMessage,
    RemediationSummary,
    ServiceFacts,
    StoredSignal,
)

log = logging.getLogger(__name__)

# Remediations older than this don't shape a decision: longer than the 24 h rate
# limit and any sane cooldown. (Plans stay `planned` until the executor lands, and
# would otherwise block their service forever.)
HISTORY_WINDOW = timedelta(days=2)
# Decisions that need no remediation row: nothing matched, or nothing could.
_NOT_REMEDIATIONS = {NoActionReason.RESOLVED, NoActionReason.NO_RULE, NoActionReason.UNROUTABLE}
_STATUS_FOR_HISTORY = {
    "planned": RemediationStatus.OPEN,
    "awaiting_approval": RemediationStatus.OPEN,  # people are deciding; automation waits
    "running": RemediationStatus.OPEN,
    "needs_human": RemediationStatus.OPEN,  # blocks automation until people close it
    "dry-run": RemediationStatus.SUCCEEDED,  # a simulation ends at once; cooldown applies
    "succeeded": RemediationStatus.SUCCEEDED,
    "failed": RemediationStatus.FAILED,
    "cancelled": RemediationStatus.CANCELLED,
}


HISTORY_KINDS = ("deployment.succeeded", "migration.started", "migration.applied",
                 "migration.failed")  # fmt: skip
HISTORY_EVENTS = 50


def mark_healthy(
    deploys: list[DeployRecord], *, alerts_between: list[datetime]
) -> tuple[DeployRecord, ...]:
    """A deploy counts as healthy once a later deploy replaced it with no alert that the
    rules act on firing in between: it served, and nobody had to be woken for it.

    The newest deploy stays unknown (it is the one under suspicion). A deploy the CD
    pipeline itself reported healthy keeps that verdict.
    """
    ordered = sorted(deploys, key=lambda d: d.finished_at)
    marked = []
    successors: list[DeployRecord | None] = [*ordered[1:], None]
    for current, following in zip(ordered, successors[: len(ordered)], strict=True):
        if current.healthy is None and following is not None:
            clean = not any(
                current.finished_at <= t < following.finished_at for t in alerts_between
            )
            current = current.model_copy(update={"healthy": clean})
        marked.append(current)
    return tuple(marked)


class UnknownFacts:
    """ServiceFacts when no cluster is configured: replicas unknown."""

    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        return None


def remediation_id(signal_id: str) -> str:
    return "rem_" + hashlib.blake2b(signal_id.encode(), digest_size=10).hexdigest()


class DecisionEngine:
    def __init__(
        self,
        *,
        journal: Journal,
        pack: RulePack,
        facts: ServiceFacts,
        dry_run: bool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_size: int = 500,
        on_decision: Callable[[Decision], None] | None = None,
        outcome_channel: str | None = None,
        notice_channels: tuple[str, ...] = (),
        on_deploy: Callable[[Signal], Awaitable[None]] | None = None,
    ) -> None:
        self._journal = journal
        self._pack = pack
        self._facts = facts
        self._dry_run = dry_run
        self._clock = clock
        self._batch_size = batch_size
        self._on_decision = on_decision
        self._outcome_channel = outcome_channel
        self._notice_channels = notice_channels
        self._on_deploy = on_deploy
        self._wake = asyncio.Event()
        self._alert_kinds = tuple(sorted({
            kind for rule in pack.rules if rule.match.source == "alertmanager"
            for kind in rule.match.kinds
        }))  # fmt: skip

    def wake(self) -> None:
        """New signals were journaled (called by intake)."""
        self._wake.set()

    async def run(self) -> None:
        """Root task: decide until cancelled; back off while the journal is unavailable."""
        while True:
            self._wake.clear()
            try:
                decided = await self.run_once()
            except TemporaryError as exc:
                log.warning("deciding paused, journal unavailable: %s", exc)
                await asyncio.sleep(exc.delay)
                continue
            if decided == 0:
                await self._wake.wait()

    async def run_once(self) -> int:
        """Decide one batch of undecided signals; return how many."""
        stored = await self._journal.undecided_signals(limit=self._batch_size)
        if not stored:
            return 0
        now = self._clock()
        circuit = await self._circuit_state()
        histories: dict[str, list[RemediationRecord]] = {}
        view = _BatchView(journal=self._journal, facts=self._facts, alert_kinds=self._alert_kinds)
        records: list[DecisionRecord] = []
        decisions: list[Decision] = []
        for item in stored:
            signal = item.signal
            history = await self._history(signal, histories, now=now)
            state = await self._state(item, history, circuit, view)
            decision = decide(signal, pack=self._pack, state=state, now=now, dry_run=self._dry_run)
            record = self._record(item, decision, now=now)
            records.append(record)
            decisions.append(decision)
            remediation = record.remediation
            if (
                remediation is not None
                and remediation.status != "skipped"
                and remediation.action is not None
                and signal.service
            ):
                status = _STATUS_FOR_HISTORY[remediation.status]
                histories[signal.service].append(
                    RemediationRecord(
                        action=ActionKind(remediation.action),
                        started_at=now,
                        status=status,
                        rule=remediation.rule,
                        manual=remediation.manual,
                    )
                )
                if remediation.automated and remediation.status == "planned":
                    circuit = circuit.model_copy(
                        update={"automated_action_times": (*circuit.automated_action_times, now)}
                    )
            if self._on_decision is not None:
                self._on_decision(decision)
        await self._journal.record_decisions(
            records,
            through_seq=stored[-1].seq,
            outbox=[*self._outcome_messages(records), *self._notices(records, decisions)],
        )
        await self._latch_circuit(circuit, now=now)
        if self._on_deploy is not None:
            for item in stored:
                if item.signal.kind == "deployment.succeeded":
                    await self._deploy_hook(item.signal)
        return len(stored)

    async def _deploy_hook(self, signal: Signal) -> None:
        assert self._on_deploy is not None
        try:
            await self._on_deploy(signal)
        except (TemporaryError, PermanentError) as exc:
            # A missing snapshot only matters if this release's config must be restored
            # later; that restore then refuses with a clear reason.
            log.warning("after deploy %s of %s: %s", signal.id, signal.service, exc)

    def _notices(
        self, records: list[DecisionRecord], decisions: list[Decision]
    ) -> list[OutboxMessage]:
        """People hear of every plan and dry run, and of skips the rules flag (circuit
        open, escalation, rate limit) -- not of the hundreds of in-progress skips of a storm.
        """
        if not self._notice_channels:
            return []
        messages: list[OutboxMessage] = []
        for record, decision in zip(records, decisions, strict=True):
            r = record.remediation
            if r is None:
                continue
            if r.status == "skipped" and not (isinstance(decision, NoAction) and decision.notify):
                continue
            messages += notice_messages(
                remediation_id=r.id,
                stage=stage_for(RecordStatus(r.status)),
                channels=self._notice_channels,
                at=r.created_at,
            )
        return messages

    def _outcome_messages(self, records: list[DecisionRecord]) -> list[OutboxMessage]:
        if self._outcome_channel is None:
            return []
        messages = []
        for record in records:
            r = record.remediation
            if r is None:
                continue
            event = outcome_event(
                remediation_id=r.id, status=r.status, service=r.service, namespace=r.namespace,
                rule=r.rule, action=r.action, reason=r.reason, signal_id=r.signal_id,
                explanation=r.explanation, at=r.created_at,
            )  # fmt: skip
            messages.append(
                OutboxMessage(
                    id=event["id"],
                    channel=self._outcome_channel,
                    key=r.service,
                    payload=event,
                    created_at=r.created_at,
                )
            )
        return messages

    # -- state -------------------------------------------------------------------------
    async def _history(
        self, signal: Signal, cache: dict[str, list[RemediationRecord]], *, now: datetime
    ) -> list[RemediationRecord]:
        if signal.service is None:
            return []
        if signal.service not in cache:
            rows = await self._journal.remediation_history(
                service=signal.service, since=now - HISTORY_WINDOW
            )
            cache[signal.service] = [r for r in map(_history_record, rows) if r is not None]
        return cache[signal.service]

    async def _state(
        self,
        item: StoredSignal,
        history: list[RemediationRecord],
        circuit: CircuitState,
        view: _BatchView,
    ) -> ServiceState:
        signal = item.signal
        spec = self._pack.services.get(signal.service) if signal.service else None
        if spec is None or signal.service is None:
            return ServiceState(remediations=tuple(history), circuit=circuit)
        # Replicas only matter when an action could follow; resolved alerts never act.
        replicas = None
        if signal.status is not Status.RESOLVED:
            replicas = await view.replicas(signal.service, spec.namespace)
        deploys, migrations = await view.history(signal.service, upto_seq=item.seq)
        return ServiceState(
            current_replicas=replicas[0] if replicas else None,
            max_replicas=replicas[1] if replicas else None,
            deploys=deploys,
            migrations=migrations,
            remediations=tuple(history),
            circuit=circuit,
        )

    async def _circuit_state(self) -> CircuitState:
        record = await self._journal.circuit()
        since = record.changed_at
        return CircuitState(
            open=record.open,
            automated_action_times=tuple(await self._journal.automated_actions_since(since=since)),
            consecutive_failures=await self._journal.consecutive_failures(since=since),
        )

    async def _latch_circuit(self, circuit: CircuitState, *, now: datetime) -> None:
        if circuit.open:
            return
        reason = circuit_trip_reason(circuit, limits=self._pack.defaults.circuit_breaker, now=now)
        if reason is not None:
            log.warning("circuit breaker opened: %s; only notifying until reset", reason)
            await self._journal.set_circuit(open=True, reason=reason, at=now)

    # -- records -----------------------------------------------------------------------
    def _record(self, item: StoredSignal, decision: Decision, *, now: datetime) -> DecisionRecord:
        signal = item.signal
        text = explain(decision)
        remediation: NewRemediation | None = None
        reason: str | None
        rule: str | None
        if isinstance(decision, Plan):
            outcome, reason, rule = "plan", None, decision.rule
            # A plan that needs approval is only a proposal until someone approves it.
            status = "awaiting_approval" if decision.require_approval else "planned"
            remediation = self._remediation(
                signal, decision, plan=decision, status=status, reason=None, now=now, text=text
            )
        else:
            outcome, reason, rule = "no_action", decision.reason.value, decision.rule
            if decision.reason not in _NOT_REMEDIATIONS and signal.service is not None:
                status = "dry-run" if decision.reason is NoActionReason.DRY_RUN else "skipped"
                remediation = self._remediation(
                    signal, decision, plan=decision.plan, status=status, reason=reason, now=now,
                    text=text,
                )  # fmt: skip
        if outcome == "plan" or (remediation is not None and remediation.status == "dry-run"):
            log.info("signal %s (%s, %s): %s", signal.id, signal.kind, signal.service,
                     text.splitlines()[0])  # fmt: skip
        return DecisionRecord(
            signal_seq=item.seq,
            signal_id=signal.id,
            service=signal.service,
            outcome=outcome,
            reason=reason,
            rule=rule,
            decided_at=now,
            explanation=text,
            remediation=remediation,
        )

    def _remediation(
        self,
        signal: Signal,
        decision: Decision,
        *,
        plan: Plan | None,
        status: str,
        reason: str | None,
        now: datetime,
        text: str,
    ) -> NewRemediation:
        assert signal.service is not None
        manual = signal.source is Source.MANUAL
        action = plan.action.value if plan is not None else None
        spec = self._pack.services.get(signal.service)
        return NewRemediation(
            id=remediation_id(signal.id),
            signal_id=signal.id,
            service=signal.service,
            namespace=plan.namespace if plan else (spec.namespace if spec else signal.namespace),
            rule=decision.rule,
            action=action,
            status=status,
            reason=reason,
            manual=manual,
            automated=not manual and action not in (None, ActionKind.NOTIFY_ONLY.value),
            created_at=now,
            decision=decision.to_dict(),
            explanation=text,
        )


_History = tuple[tuple[DeployRecord, ...], tuple[MigrationRecord, ...]]


class _BatchView:
    """What one batch reads about services, read once per service.

    In an alert storm a batch holds hundreds of signals for one service; each needs
    the same replicas and deploy history. History is cut at each signal's own journal
    position, so a deploy journaled after an alert never shapes that alert's decision.
    """

    def __init__(
        self, *, journal: Journal, facts: ServiceFacts, alert_kinds: tuple[str, ...]
    ) -> None:
        self._journal = journal
        self._facts = facts
        self._alert_kinds = alert_kinds
        self._replicas: dict[str, tuple[int, int | None] | None] = {}
        self._events: dict[str, list[StoredSignal]] = {}
        self._alert_times: dict[str, list[datetime]] = {}
        self._memo: dict[tuple[str, int], _History] = {}

    async def replicas(self, service: str, namespace: str) -> tuple[int, int | None] | None:
        if service not in self._replicas:
            self._replicas[service] = await self._facts.replicas(
                service=service, namespace=namespace
            )
        return self._replicas[service]

    async def history(self, service: str, *, upto_seq: int) -> _History:
        if service not in self._events:
            newest_first = await self._journal.service_events(
                service=service, kinds=HISTORY_KINDS, limit=HISTORY_EVENTS
            )
            events = list(reversed(newest_first))
            self._events[service] = events
            finishes = [
                d.finished_at
                for d in map(deploy_record_from_signal, (e.signal for e in events))
                if d is not None
            ]
            # Only alerts between the oldest and newest deploy can mark one unhealthy.
            self._alert_times[service] = []
            if len(finishes) > 1:
                self._alert_times[service] = await self._journal.firing_alert_times(
                    service=service,
                    kinds=self._alert_kinds,
                    since=min(finishes),
                    until=max(finishes),
                )
        events = self._events[service]
        prefix = bisect.bisect_right([e.seq for e in events], upto_seq)
        key = (service, prefix)
        if key not in self._memo:
            visible = [e.signal for e in events[:prefix]]
            deploys = mark_healthy(
                [d for d in map(deploy_record_from_signal, visible) if d is not None],
                alerts_between=self._alert_times[service],
            )
            migrations = tuple(
                m for m in map(migration_record_from_signal, visible) if m is not None
            )
            self._memo[key] = (deploys, migrations)
        return self._memo[key]


def _history_record(row: RemediationSummary) -> RemediationRecord | None:
    status = _STATUS_FOR_HISTORY.get(row.status)
    if status is None or row.action is None:
        return None
    return RemediationRecord(
        action=ActionKind(row.action),
        started_at=row.created_at,
        status=status,
        rule=row.rule,
        manual=row.manual,
    )
