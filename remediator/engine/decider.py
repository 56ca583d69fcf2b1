"""Decides every journaled signal, in journal order, exactly once.

The engine reads signals after its cursor, builds each service's state from the
journal (past remediations, the circuit breaker) and live facts (replicas), asks the
pure ``decide`` function, and writes the decisions, the remediations they open and
the new cursor in one transaction. A crash between decide and write re-decides the
same signals on restart; ids derived from the signal id make that write idempotent.

The cursor moves by compare-and-set: when several replicas decide the same batch,
the first write wins and the others write nothing, read the new cursor and go on
from there. So each signal is decided exactly once, without a leader.

One engine task decides serially, so two signals for one service never race: in
an alert storm the first opens a remediation and the rest see it as in progress.

No single signal stops the engine. An error while deciding one signal is journaled as
that signal's decision (``no_action``, ``internal_error``), people are notified, and
the cursor moves past it; live facts that cannot be read are treated as unknown. Only a
journal that is unavailable (``TemporaryError``) pauses deciding, and the root task
backs off and carries on after anything else.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import ValidationError

from remediator.domain.approvals import ApprovalConfig, ApprovalRequest, policy_for
from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.domain.lifecycle import RemediationStatus, remediation_id
from remediator.domain.outcomes import outcome_event
from remediator.domain.plans import ActionKind, Decision, NoAction, NoActionReason, Plan, explain
from remediator.domain.record import stage_for
from remediator.domain.requests import request_facts
from remediator.domain.rules import (
    HISTORY_KINDS,
    CircuitState,
    DeployRecord,
    MigrationRecord,
    PastOutcome,
    RemediationRecord,
    RulePack,
    ServiceState,
    circuit_trip_reason,
    decide,
    deploy_record_from_signal,
    history_trusted,
    match_rule,
    migration_record_from_signal,
)
from remediator.domain.rules.events import DEPLOY_SUCCEEDED
from remediator.domain.signals import Signal, Source, Status
from remediator.engine.notify import notice_messages
from remediator.ports import (
    CircuitStore,
    DecisionRecord,
    DecisionStore,
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
_S = RemediationStatus
# How the rules see each status; skipped ones are no part of the history.
_STATUS_FOR_HISTORY = {
    _S.PLANNED: PastOutcome.OPEN,
    _S.AWAITING_APPROVAL: PastOutcome.WAITING,  # people are deciding; automation goes on
    _S.RUNNING: PastOutcome.OPEN,
    _S.NEEDS_HUMAN: PastOutcome.OPEN,  # blocks automation until people close it
    _S.DRY_RUN: PastOutcome.SUCCEEDED,  # a simulation ends at once; cooldown applies
    _S.SUCCEEDED: PastOutcome.SUCCEEDED,
    _S.FAILED: PastOutcome.FAILED,
    # Never ran: people withdrew it, said no, or let it lapse.
    _S.CANCELLED: PastOutcome.CANCELLED,
    _S.REJECTED: PastOutcome.CANCELLED,
    _S.EXPIRED: PastOutcome.CANCELLED,
}
del _S
_SCALING = (ActionKind.SCALE_UP, ActionKind.SCALE_OR_ROLLBACK)


class DeciderJournal(DecisionStore, CircuitStore, Protocol):
    """The journal roles the engine uses: signals to decide and history, the breaker."""


HISTORY_EVENTS = 50
# Between looks for signals other replicas journaled (this one's intake wakes it at once).
POLL_SECONDS = 2.0
# Signals decided between yields to the event loop. Deciding is CPU work that awaits
# nothing once a batch's reads are cached (a storm's 500 signals for one service took
# some 300 ms in one go), and every webhook, plan step and probe waits while it runs:
# a few milliseconds of deciding at a time keeps the loop's lag low.
DECIDE_SLICE = 8
# Journaled signals kept in memory for deciding, at most (a backlog beyond it is read
# back from the journal when its turn comes): some 40 MB of Alertmanager-sized signals
# (about 2 KB each). A 10,000-alert storm fits; reading a signal back cost a fifth of
# the decider's time while it drained a backlog (docs/benchmarks.md).
FRESH_SIGNALS = 20_000
# How much of an exception's message a decision's explanation keeps.
MAX_ERROR_TEXT = 500


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


class DecisionEngine:
    def __init__(
        self,
        *,
        journal: DeciderJournal,
        pack: RulePack,
        facts: ServiceFacts,
        dry_run: bool,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_size: int = 500,
        on_decision: Callable[[Decision], None] | None = None,
        on_decision_latency: Callable[[float], None] | None = None,
        outcome_channel: str | None = None,
        notice_channels: tuple[str, ...] = (),
        on_deploy: Callable[[Signal], Awaitable[None]] | None = None,
        on_internal_error: Callable[[str], None] | None = None,
        on_facts_error: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_backoff: float = 60.0,
        poll_seconds: float = POLL_SECONDS,
        failpoints: Failpoints = NO_FAILPOINTS,
        approvals: ApprovalConfig | None = None,
        fresh_signals: int = FRESH_SIGNALS,
    ) -> None:
        """``approvals`` sets the response times and expiry of plans that wait for
        approval, and who approves an emergency. ``on_decision_latency`` gets, for each
        signal this engine decided, the seconds from its receipt until its decision was
        journaled; ``on_internal_error`` gets the
        exception's type name of every error the engine survived (a signal it could not
        decide, a failed batch or hook); ``on_facts_error`` gets the service whose live
        facts could not be read."""
        self._journal = journal
        self._pack = pack
        self._facts = facts
        self._dry_run = dry_run
        self._clock = clock
        self._batch_size = batch_size
        self._on_decision = on_decision
        self._on_decision_latency = on_decision_latency
        self._outcome_channel = outcome_channel
        self._notice_channels = notice_channels
        self._on_deploy = on_deploy
        self._on_internal_error = on_internal_error
        self._on_facts_error = on_facts_error
        self._sleep = sleep
        self._max_backoff = max_backoff
        self._poll_seconds = poll_seconds
        self._failpoints = failpoints
        self._approvals = approvals or ApprovalConfig()
        self._wake = asyncio.Event()
        # Signals intake just journaled, by seq: deciding them reads only their seqs back.
        # In hand-off order, which is nearly seq order: the decided ones leave from the
        # front (see _forget_fresh).
        self._fresh: OrderedDict[int, Signal] = OrderedDict()
        self._fresh_limit = fresh_signals
        # Exception types whose traceback was logged: one traceback per kind of failure,
        # not one per signal of a storm.
        self._traced: set[str] = set()
        self._alert_kinds = tuple(sorted({
            kind for rule in pack.rules if rule.match.source == "alertmanager"
            for kind in rule.match.kinds
        }))  # fmt: skip

    def wake(self) -> None:
        """New signals were journaled (called by intake)."""
        self._wake.set()

    def journaled(self, stored: Sequence[StoredSignal]) -> None:
        """Intake journaled these signals (committed): keep them for deciding, and wake.

        Only an optimisation: the journal still says which signals follow the cursor,
        so a signal not kept (past FRESH_SIGNALS) is read back, and a restart loses
        nothing."""
        room = self._fresh_limit - len(self._fresh)
        for item in stored[: max(room, 0)]:
            self._fresh[item.seq] = item.signal
        self._wake.set()

    async def run(self) -> None:
        """Root task: decide until cancelled; back off while the journal is unavailable.

        It survives every other error too. Errors of one signal never reach here (they
        are journaled as its decision); what does is the journal failing in a way it did
        not classify, or a bug outside any one signal. Ending the task would stop deciding
        for every service, and a restart would meet the same state: retry with backoff.
        """
        failures = 0
        while True:
            self._wake.clear()
            try:
                decided = await self.run_once()
            except TemporaryError as exc:
                log.warning("deciding paused, journal unavailable: %s", exc)
                await self._sleep(exc.delay)
                continue
            except Exception as exc:  # noqa: BLE001 - survived, logged and counted
                failures += 1
                delay = min(2.0 ** (failures - 1), self._max_backoff)
                self._internal_error(exc, f"deciding a batch failed; retrying in {delay:.0f}s")
                await self._sleep(delay)
                continue
            failures = 0
            if decided == 0:
                # Woken by this instance's intake; the poll finds signals another
                # replica journaled (and did not get to decide).
                with contextlib.suppress(TimeoutError):  # not wait_for: see Executor.run
                    async with asyncio.timeout(self._poll_seconds):
                        await self._wake.wait()

    async def run_once(self) -> int:
        """Decide one batch of undecided signals; return how many this engine decided.

        Signals another replica decided first are read again from the moved cursor."""
        while True:
            batch = await self._journal.undecided_signals(limit=self._batch_size, known=self._fresh)
            stored = batch.signals
            self._forget_fresh(upto=stored[-1].seq if stored else batch.cursor)
            if not stored:
                return 0
            try:
                if await self._decide_batch(stored, cursor=batch.cursor):
                    return len(stored)
            except _WriteRefused as refused:
                # The journal refused the batch for a reason retrying cannot fix, so
                # something in it is poison. Deciding again one signal per write finds it,
                # and keeps the rest correct: each decision is written before the next is
                # made, so none leans on a plan of the batch that was never written
                # (re-recording every signal as internal_error would be simpler, but lose
                # good decisions).
                log.error("the journal refused %d decisions (%s); deciding them one at a time",
                          len(stored), _error_text(refused.cause))  # fmt: skip
                return await self._decide_one_by_one(stored, cursor=batch.cursor)
            log.debug("another replica decided signals up to %d first", stored[-1].seq)

    def _forget_fresh(self, *, upto: int) -> None:
        """Drop kept signals up to ``upto``: in hand now, or decided (here or elsewhere)."""
        # From the front only, in O(what leaves), not a copy of all that stays (20,000 a
        # batch). Hand-offs of concurrent requests may arrive out of seq order: one
        # behind a newer seq waits for the next batch, which passes them both.
        fresh = self._fresh
        while fresh:
            seq = next(iter(fresh))
            if seq > upto:
                break
            fresh.popitem(last=False)

    async def _decide_one_by_one(self, items: Sequence[StoredSignal], *, cursor: int) -> int:
        """Decide and write each signal alone; stop where another replica was first."""
        decided = 0
        for item in items:
            try:
                written = await self._decide_batch([item], cursor=cursor)
            except _WriteRefused as refused:
                written = await self._write_internal_error(item, refused.cause, cursor=cursor)
            if not written:
                break
            cursor = item.seq
            decided += 1
        return decided

    async def _decide_batch(self, items: Sequence[StoredSignal], *, cursor: int) -> bool:
        """Decide ``items`` (in journal order) and write the decisions with the cursor;
        False when another replica decided them first (nothing was written)."""
        now = self._clock()
        circuit = await self._circuit_state()
        histories: dict[str, list[RemediationRecord]] = {}
        view = _BatchView(journal=self._journal, facts=self._facts, pack=self._pack,
                          alert_kinds=self._alert_kinds, on_error=self._facts_failed)  # fmt: skip
        records: list[DecisionRecord] = []
        decisions: list[Decision] = []
        for n, item in enumerate(items, start=1):
            if n % DECIDE_SLICE == 0:
                await asyncio.sleep(0)  # a yield, not a wait: see DECIDE_SLICE
            try:
                decision, record = await self._decide(item, histories, circuit, view, now=now)
                circuit = _remember(record, histories, circuit, now=now)
            except TemporaryError:
                raise  # the journal is unavailable: the whole batch waits for it
            except Exception as exc:  # noqa: BLE001 - journaled as its decision
                decision, record = self._internal_error_decision(item, exc, now=now)
            records.append(record)
            decisions.append(decision)
        if not await self._write(records, decisions, cursor=cursor, through_seq=items[-1].seq):
            return False
        self._journaled(items, decisions)
        await self._latch_circuit(circuit, now=now)
        if self._on_deploy is not None:
            for item in items:
                if self._is_trusted_deploy(item.signal):
                    await self._deploy_hook(item.signal)
        return True

    async def _decide(
        self,
        item: StoredSignal,
        histories: dict[str, list[RemediationRecord]],
        circuit: CircuitState,
        view: _BatchView,
        *,
        now: datetime,
    ) -> tuple[Decision, DecisionRecord]:
        self._failpoints.hit("decider.signal", item.signal.service)
        if self._weighs_state(item.signal):
            history = await self._history(item.signal, histories, now=now)
            state = await self._state(item, history, circuit, view)
        else:
            state = ServiceState(circuit=circuit)
        decision = decide(item.signal, pack=self._pack, state=state, now=now,
                          dry_run=self._dry_run)  # fmt: skip
        return decision, self._record(item, decision, now=now)

    async def _write(
        self,
        records: list[DecisionRecord],
        decisions: list[Decision],
        *,
        cursor: int,
        through_seq: int,
    ) -> bool:
        try:
            outbox = [*self._outcome_messages(records), *self._notices(records, decisions)]
            return await self._journal.record_decisions(
                records, cursor=cursor, through_seq=through_seq, outbox=outbox
            )
        except TemporaryError:
            raise
        except Exception as exc:
            raise _WriteRefused(exc) from exc

    # -- errors ------------------------------------------------------------------------
    def _internal_error(self, exc: Exception, context: str) -> None:
        """Log (one traceback per exception type) and count an error the engine survived."""
        kind = type(exc).__name__
        first = kind not in self._traced
        self._traced.add(kind)
        log.error("%s: %s", context, _error_text(exc), exc_info=exc if first else None)
        if not first:
            log.debug("traceback of the error above", exc_info=exc)
        if self._on_internal_error is not None:
            self._on_internal_error(kind)

    def _internal_error_decision(
        self, item: StoredSignal, exc: Exception, *, now: datetime
    ) -> tuple[NoAction, DecisionRecord]:
        """The decision journaled for a signal that could not be decided."""
        signal = item.signal
        self._internal_error(
            exc, f"signal {signal.id} ({signal.kind}, {signal.service}) recorded as "
            f"internal_error, not decided"
        )  # fmt: skip
        decision = NoAction(
            reason=NoActionReason.INTERNAL_ERROR,
            detail=f"deciding failed with {_error_text(exc)}; nothing was done, people decide",
            service=signal.service if isinstance(signal.service, str) else None,
            signal_id=signal.id,
            notify=True,
        )
        try:
            return decision, self._record(item, decision, now=now)
        except Exception:  # noqa: BLE001 - the error is already logged and counted
            return decision, _bare_record(item, decision, now=now)

    async def _write_internal_error(
        self, item: StoredSignal, cause: Exception, *, cursor: int
    ) -> bool:
        """Journal a signal whose decision the journal refused; its cursor moves on.
        False when another replica decided it first."""
        now = self._clock()
        decision, record = self._internal_error_decision(item, cause, now=now)
        try:
            written = await self._write([record], [decision], cursor=cursor, through_seq=item.seq)
        except _WriteRefused:
            # Its remediation or notice is what the journal refuses: the decision alone.
            bare = _bare_record(item, decision, now=now)
            written = await self._write([bare], [decision], cursor=cursor, through_seq=item.seq)
        if written:
            self._journaled([item], [decision])
        return written

    def _journaled(self, items: Sequence[StoredSignal], decisions: Sequence[Decision]) -> None:
        """Tell the hooks about decisions this engine has just journaled."""
        if self._on_decision is not None:
            for decision in decisions:
                self._on_decision(decision)
        if self._on_decision_latency is not None:
            # After the write, not the batch's decided_at: the wait includes the commit.
            journaled_at = self._clock()
            for item in items:
                waited = (journaled_at - item.signal.received_at).total_seconds()
                # Another host's clock may run ahead of ours; a histogram takes no negatives.
                self._on_decision_latency(max(0.0, waited))

    def _facts_failed(self, service: str, namespace: str, exc: Exception) -> None:
        log.warning("replicas of %s/%s unknown for this batch, reading them failed: %s",
                    namespace, service, _error_text(exc))  # fmt: skip
        if self._on_facts_error is not None:
            self._on_facts_error(service)

    def _is_trusted_deploy(self, signal: Signal) -> bool:
        # Snapshots are labelled with the event's revision: only a source trusted for
        # deploy history may name one (an alert called deployment.succeeded may not).
        return signal.kind == DEPLOY_SUCCEEDED and history_trusted(
            signal, defaults=self._pack.defaults
        )

    async def _deploy_hook(self, signal: Signal) -> None:
        assert self._on_deploy is not None
        try:
            await self._on_deploy(signal)
        except (TemporaryError, PermanentError) as exc:
            # A missing snapshot only matters if this release's config must be restored
            # later; that restore then refuses with a clear reason.
            log.warning("after deploy %s of %s: %s", signal.id, signal.service, exc)
        except Exception as exc:  # noqa: BLE001 - a hook never stops deciding
            self._internal_error(exc, f"after deploy {signal.id} of {signal.service}")

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
            skipped = r.status is RemediationStatus.SKIPPED
            if skipped and not (isinstance(decision, NoAction) and decision.notify):
                continue
            messages += notice_messages(
                remediation_id=r.id,
                stage=stage_for(r.status),
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
        assert signal.service is not None  # _weighs_state
        if signal.service not in cache:
            rows = await self._journal.remediation_history(
                service=signal.service, since=now - HISTORY_WINDOW
            )
            cache[signal.service] = [r for r in map(_history_record, rows) if r is not None]
        return cache[signal.service]

    def _weighs_state(self, signal: Signal) -> bool:
        """Whether ``decide`` looks past the signal itself. It answers a resolved,
        unroutable or out-of-catalog signal first, so those read nothing: a forged
        service or namespace costs no cluster or history reads."""
        return (
            signal.status is not Status.RESOLVED
            and signal.service is not None
            and self._pack.out_of_scope(signal.service, signal.namespace or None) is None
        )

    async def _state(
        self,
        item: StoredSignal,
        history: list[RemediationRecord],
        circuit: CircuitState,
        view: _BatchView,
    ) -> ServiceState:
        signal = item.signal
        assert signal.service is not None  # _weighs_state
        spec = self._pack.services[signal.service]
        # Replicas only matter to a scale-up, for a service with scale bounds; resolved
        # alerts never act. Reading them is two apiserver requests (the scale
        # subresource and the HPAs) on the way to every rollback otherwise.
        replicas = None
        if (
            signal.status is not Status.RESOLVED
            and spec.scale is not None
            and self._may_scale(signal)
        ):
            replicas = await view.replicas(signal.service, spec.namespace)
        deploys, migrations = await view.history(signal.service, upto_seq=item.seq)
        return ServiceState(
            current_replicas=replicas[0] if replicas else None,
            max_replicas=replicas[1] if replicas else None,
            facts_error=view.facts_error(signal.service) if replicas is None else None,
            deploys=deploys,
            migrations=migrations,
            remediations=tuple(history),
            circuit=circuit,
        )

    def _may_scale(self, signal: Signal) -> bool:
        """Whether the rule ``decide`` will pick for ``signal`` can scale the service."""
        rule = match_rule(signal, pack=self._pack)
        return rule is not None and rule.action in _SCALING

    async def _circuit_state(self) -> CircuitState:
        inputs = await self._journal.circuit_inputs()
        return CircuitState(
            open=inputs.record.open,
            automated_action_times=inputs.automated_action_times,
            consecutive_failures=inputs.consecutive_failures,
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
            status = (
                RemediationStatus.AWAITING_APPROVAL
                if decision.require_approval
                else RemediationStatus.PLANNED
            )
            remediation = self._remediation(
                signal, decision, plan=decision, status=status, reason=None, now=now, text=text
            )
        else:
            outcome, reason, rule = "no_action", decision.reason.value, decision.rule
            if _opens_remediation(decision) and signal.service is not None:
                status = (
                    RemediationStatus.DRY_RUN
                    if decision.reason is NoActionReason.DRY_RUN
                    else RemediationStatus.SKIPPED
                )
                remediation = self._remediation(
                    signal, decision, plan=decision.plan, status=status, reason=reason, now=now,
                    text=text,
                )  # fmt: skip
        rehearsed = remediation is not None and remediation.status is RemediationStatus.DRY_RUN
        if outcome == "plan" or rehearsed:
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
        status: RemediationStatus,
        reason: str | None,
        now: datetime,
        text: str,
    ) -> NewRemediation:
        assert signal.service is not None
        manual = signal.source is Source.MANUAL
        action = plan.action if plan is not None else None
        spec = self._pack.services.get(signal.service)
        if isinstance(decision, NoAction) and decision.reason is NoActionReason.NOT_IN_CATALOG:
            spec = None  # the namespace the signal asked for, not the catalog's
        waiting = status is RemediationStatus.AWAITING_APPROVAL
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
            automated=not manual and action not in (None, ActionKind.NOTIFY_ONLY),
            created_at=now,
            decision=decision.to_dict(),
            explanation=text,
            approval=self._approval_request(signal, plan, now=now)
            if waiting and plan is not None
            else None,
        )

    def _approval_request(self, signal: Signal, plan: Plan, *, now: datetime) -> ApprovalRequest:
        """Who must approve the plan and how fast: the rule's approvers and response time,
        or one emergency approver for a request that says it is an emergency."""
        facts = request_facts(signal)
        rule = self._pack.rule(plan.rule)
        policy = policy_for(
            approvers=plan.approvers,
            response_time=rule.approval_timeout if rule is not None else None,
            emergency=facts.emergency,
            config=self._approvals,
        )
        return ApprovalRequest(
            policy=policy, requested_at=now, requester=facts.requester, scenario=facts.scenario,
            reason=facts.reason, target=facts.target,
        )  # fmt: skip


_History = tuple[tuple[DeployRecord, ...], tuple[MigrationRecord, ...]]


class _BatchView:
    """What one batch reads about services, read once per service.

    In an alert storm a batch holds hundreds of signals for one service; each needs
    the same replicas and deploy history. History is cut at each signal's own journal
    position, so a deploy journaled after an alert never shapes that alert's decision.
    """

    def __init__(
        self,
        *,
        journal: DecisionStore,
        facts: ServiceFacts,
        pack: RulePack,
        alert_kinds: tuple[str, ...],
        on_error: Callable[[str, str, Exception], None],
    ) -> None:
        self._journal = journal
        self._facts = facts
        self._defaults = pack.defaults
        self._alert_kinds = alert_kinds
        self._on_error = on_error
        self._replicas: dict[str, tuple[int, int | None] | None] = {}
        self._facts_errors: dict[str, str] = {}
        self._events: dict[str, list[StoredSignal]] = {}
        self._alert_times: dict[str, list[datetime]] = {}
        self._memo: dict[tuple[str, int], _History] = {}

    async def replicas(self, service: str, namespace: str) -> tuple[int, int | None] | None:
        if service not in self._replicas:
            try:
                found = await self._facts.replicas(service=service, namespace=namespace)
            except Exception as exc:  # noqa: BLE001 - reported, then unknown
                # Facts are advisory: without them scale-ups are skipped (people are
                # told), rollbacks still plan. Whatever the cluster answered (a 403, an
                # outage), it must not stop deciding. Read once per service per batch.
                self._on_error(service, namespace, exc)
                self._facts_errors[service] = f"reading it failed: {_error_text(exc)}"
                found = None
            self._replicas[service] = found
        return self._replicas[service]

    def facts_error(self, service: str) -> str | None:
        return self._facts_errors.get(service)

    async def history(self, service: str, *, upto_seq: int) -> _History:
        if service not in self._events:
            # Untrusted signals are left out by the query, so a flood of alerts named
            # like deploy events cannot push the real history past the limit.
            newest_first = await self._journal.service_events(
                service=service, kinds=HISTORY_KINDS, limit=HISTORY_EVENTS,
                sources=[source.value for source in self._defaults.trusted_history_sources],
            )  # fmt: skip
            events = list(reversed(newest_first))
            finishes = [
                d.finished_at for d in (self._deploy(e.signal) for e in events) if d is not None
            ]
            # Only alerts between the oldest and newest deploy can mark one unhealthy.
            alert_times: list[datetime] = []
            if len(finishes) > 1:
                alert_times = await self._journal.firing_alert_times(
                    service=service,
                    kinds=self._alert_kinds,
                    since=min(finishes),
                    until=max(finishes),
                )
            # Cached only once both reads succeeded: after a failed read, deploys with no
            # alert times would all look healthy to the next signal of the service.
            self._events[service], self._alert_times[service] = events, alert_times
        events = self._events[service]
        prefix = bisect.bisect_right([e.seq for e in events], upto_seq)
        key = (service, prefix)
        if key not in self._memo:
            visible = [e.signal for e in events[:prefix]]
            deploys = mark_healthy(
                [d for d in map(self._deploy, visible) if d is not None],
                alerts_between=self._alert_times[service],
            )
            migrations = tuple(
                m
                for m in (migration_record_from_signal(s, defaults=self._defaults) for s in visible)
                if m is not None
            )
            self._memo[key] = (deploys, migrations)
        return self._memo[key]

    def _deploy(self, signal: Signal) -> DeployRecord | None:
        # The filter again, on the signal itself: also the pack's trusted event sources.
        return deploy_record_from_signal(signal, defaults=self._defaults)


class _WriteRefused(Exception):
    """The journal refused a batch of decisions for a reason retrying cannot fix."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _opens_remediation(decision: NoAction) -> bool:
    """Whether a skip is recorded as a remediation (listed in the API, notified if flagged).

    Out-of-catalog signals are, when a rule would have acted on them: someone tried to
    have a service outside the scope remediated. One no rule matches (say a deploy event
    of another team's service) is only journaled as a decision, like ``no_rule``.
    """
    if decision.reason is NoActionReason.NOT_IN_CATALOG:
        return decision.rule is not None
    return decision.reason not in _NOT_REMEDIATIONS


def _remember(
    record: DecisionRecord,
    histories: dict[str, list[RemediationRecord]],
    circuit: CircuitState,
    *,
    now: datetime,
) -> CircuitState:
    """Feed a decision's new remediation into the rest of the batch; the new circuit."""
    remediation = record.remediation
    if (
        remediation is None
        or remediation.status is RemediationStatus.SKIPPED
        or remediation.action is None
        or not record.service
    ):
        return circuit
    entry = RemediationRecord(
        action=remediation.action,
        started_at=now,
        status=_STATUS_FOR_HISTORY[remediation.status],
        rule=remediation.rule,
        manual=remediation.manual,
    )
    if remediation.automated and remediation.status is RemediationStatus.PLANNED:
        circuit = circuit.model_copy(
            update={"automated_action_times": (*circuit.automated_action_times, now)}
        )
    histories[record.service].append(entry)  # last: nothing is half-remembered
    return circuit


def _error_text(exc: BaseException) -> str:
    """``Type: message``, clipped, for explanations and logs.

    A validation error's own message quotes the input it rejected (possibly a signal's
    body): only where and why it failed are kept.
    """
    if isinstance(exc, ValidationError):
        message = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    else:
        message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def _bare_record(item: StoredSignal, decision: NoAction, *, now: datetime) -> DecisionRecord:
    """An internal error's decision without a remediation: the least the journal needs
    to move the cursor past the signal."""
    service = item.signal.service
    return DecisionRecord(
        signal_seq=item.seq,
        signal_id=item.signal.id,
        service=service if isinstance(service, str) else None,
        outcome="no_action",
        reason=decision.reason.value,
        rule=None,
        decided_at=now,
        explanation=explain(decision),
    )


def _history_record(row: RemediationSummary) -> RemediationRecord | None:
    status = _STATUS_FOR_HISTORY.get(row.status)
    if status is None or row.action is None:
        return None
    return RemediationRecord(
        action=row.action,
        started_at=row.created_at,
        status=status,
        rule=row.rule,
        manual=row.manual,
    )
