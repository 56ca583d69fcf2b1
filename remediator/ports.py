"""The interfaces the engine and ingress depend on; journal and connectors implement them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from remediator.domain.approvals import ApprovalRequest, Vote, VoteResult
from remediator.domain.automation import AutomationLevel
from remediator.domain.lifecycle import Remediation, RemediationStatus, StepRecord, StepStatus
from remediator.domain.notices import SlackMessageRef
from remediator.domain.plans import ActionKind, Step, StepKind
from remediator.domain.record import Analysis
from remediator.domain.signals import Signal


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordResult:
    """What became of one signal handed to the journal."""

    signal_id: str
    duplicate: bool  # the key was already journaled: nothing new was stored
    # Where a new signal was stored, when the journal reads it back equal to what it was
    # given (None: a duplicate, or a journal that does not say). The decider keeps such
    # signals in memory instead of reading them back (DecisionStore.undecided_signals).
    seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalPage:
    items: Sequence[dict[str, Any]]
    next_cursor: str | None
    # item_cursors[i] continues right after items[i] (the API pages by bytes with them)
    item_cursors: Sequence[str] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSignal:
    seq: int  # journal order; the engine decides signals in this order
    signal: Signal


# Told what intake has just journaled (after the commit): the decider keeps and decides it.
OnJournaled = Callable[[Sequence[StoredSignal]], None]


def newly_stored(signals: Sequence[Signal], results: Sequence[RecordResult]) -> list[StoredSignal]:
    """The new signals of a ``record_signals`` call whose seq the journal gave."""
    return [
        StoredSignal(seq=result.seq, signal=signal)
        for signal, result in zip(signals, results, strict=True)
        if result.seq is not None
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRemediation:
    id: str
    signal_id: str
    service: str
    namespace: str | None
    rule: str | None
    action: ActionKind | None
    status: RemediationStatus  # an initial status: planned, awaiting_approval, dry-run, skipped
    reason: str | None
    manual: bool
    automated: bool  # counts toward the circuit breaker's action budget
    created_at: datetime
    decision: dict[str, Any]
    explanation: str
    # What a plan awaiting approval was asked with and under which policy; a plan
    # awaiting approval without one gets the plan's approvers and the default times.
    approval: ApprovalRequest | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecord:
    """One signal's decision; written with the remediation it opened, if any."""

    signal_seq: int
    signal_id: str
    service: str | None
    outcome: str  # plan | no_action
    reason: str | None
    rule: str | None
    decided_at: datetime
    explanation: str
    remediation: NewRemediation | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemediationSummary:
    """What the decision needs to know about a past remediation of a service."""

    id: str
    action: ActionKind | None
    status: RemediationStatus
    rule: str | None
    manual: bool
    automated: bool
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitRecord:
    open: bool
    reason: str | None
    changed_at: datetime | None  # last open or reset; actions before a reset don't count
    changed_by: str | None = None  # the principal that reset it; None: the engine


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitInputs:
    """What the breaker weighs, from one snapshot of the journal."""

    record: CircuitRecord
    # Since the breaker last changed (record.changed_at; everything when it never did):
    automated_action_times: tuple[datetime, ...]  # automated, non-skipped remediations
    consecutive_failures: int  # finished remediations that failed in a row, newest first


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionBacklog:
    """Signals journaled after the decision cursor: what deciding has still to do."""

    signals: int
    oldest_received_at: datetime | None  # when the first of them arrived; None: none wait


@dataclass(frozen=True, slots=True, kw_only=True)
class RemediationPage:
    items: Sequence[Remediation]
    next_cursor: str | None
    # item_cursors[i] continues right after items[i] (the API pages by bytes with them)
    item_cursors: Sequence[str] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxMessage:
    """Something to publish at least once; ``id`` makes redelivery detectable downstream."""

    id: str
    channel: str  # "kafka:<topic>", later "slack", "email"
    key: str | None
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingMessage:
    seq: int
    message: OutboxMessage
    attempts: int
    # A relay took it before and never marked it published: its lease was still set
    # when leased again (the relay died, stopped or lost the journal: this holder's
    # own earlier lease counts too), or a publish attempt failed. Either way it may
    # already be on the channel, in full or (a failed batch) in part.
    maybe_sent: bool


class EventPublisher(Protocol):
    """Delivers outbox messages of one channel (e.g. a Kafka topic)."""

    channel: str

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Deliver all or raise (TemporaryError: retry later; nothing is marked done)."""
        ...

    async def already_published(self, messages: Sequence[OutboxMessage]) -> set[str]:
        """The ids of those ``messages`` that are already on the channel (a relay
        published them and stopped before marking them). Raises TemporaryError when
        the channel cannot be read back now; then nothing may be published again."""
        ...


class NeedsHuman(Exception):
    """Raised by a step runner when the situation is one people must resolve
    (e.g. a Helm release stuck in pending-*): the remediation ends ``needs_human``.

    ``detail`` is evidence (JSON-able) journaled with the step, e.g. what a failed
    verification saw."""

    def __init__(self, message: str = "", *, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.detail: dict[str, Any] = dict(detail or {})


class StepRunner(Protocol):
    """Carries out one plan step against the world (Kubernetes, helm, databases)."""

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        """Do the step; return what changed (JSON-able) for the timeline.

        ``context`` carries results of earlier steps of the same plan (e.g. the
        replicas a canary stable deployment had). Raises TemporaryError, PermanentError
        (the plan fails) or NeedsHuman.
        """
        ...

    def resumable(self, kind: StepKind) -> bool:
        """Safe to run again after a crash left it unfinished (reads, waits, checks)."""
        ...


class ServiceLock(Protocol):
    """One plan per service across every replica (a Kubernetes Lease)."""

    async def acquire(self, *, service: str, namespace: str) -> bool:
        """True when this instance now holds the service; False when another does."""
        ...

    def held(self, *, service: str) -> bool:
        """True while this instance still holds the lock it acquired for ``service``;
        False once it was lost (taken over, deleted, or not renewed in time) or never
        taken. The executor checks it before every step and stops when it is False."""
        ...

    async def release(self, *, service: str, namespace: str) -> None:
        """Give the lock up; never frees a lock another instance holds now."""
        ...


class SlackPort(Protocol):
    async def post(
        self, *, channel: str, blocks: list[dict[str, Any]], text: str
    ) -> SlackMessageRef: ...

    async def update(
        self, *, ref: SlackMessageRef, blocks: list[dict[str, Any]], text: str
    ) -> None: ...


class SlackReplies(Protocol):
    """A message only one person in a channel sees (the answer to their click)."""

    async def ephemeral(self, *, channel: str, user: str, text: str) -> None: ...


class EmailPort(Protocol):
    async def send(
        self,
        *,
        to: Sequence[str],
        subject: str,
        text: str,
        html: str,
        message_id: str | None = None,
    ) -> None: ...


class ServiceFacts(Protocol):
    """Live facts about a workload (Kubernetes); ``None`` when unknown."""

    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        """(current replicas, ceiling such as the HPA's max or None)."""
        ...


# -- the journal, by role ------------------------------------------------------------
# Each component depends only on the roles it uses. Both journals (SQLite, PostgreSQL)
# implement every role, and tests/contract runs one suite against both. Every method
# raises ``TemporaryError`` when storage is unavailable for now and ``PermanentError``
# for requests that can never succeed.


@dataclass(frozen=True, slots=True, kw_only=True)
class UndecidedBatch:
    """Signals after the decision cursor, oldest first, and the cursor they follow."""

    cursor: int  # the last decided seq when read; record_decisions compares it
    signals: Sequence[StoredSignal]


class JournalLifecycle(Protocol):
    async def open(self) -> None:
        """Connect and migrate the schema to this version's."""
        ...

    async def close(self) -> None: ...

    def alive(self) -> bool:
        """The journal is open and can still make progress (for /healthz).

        False once it cannot recover without a restart (e.g. its writer stopped):
        every call then fails with TemporaryError at once.
        """
        ...

    async def check_writable(self) -> None:
        """Commit this instance's heartbeat, or raise TemporaryError (for /readyz).

        Other replicas read heartbeats to tell a dead replica's claims from a live one's."""
        ...


class SignalStore(Protocol):
    async def record_signals(self, signals: Sequence[Signal]) -> list[RecordResult]:
        """Store each signal whose key is new; durable when this returns.

        Results are in input order. A key seen before (earlier or within the same
        call, on any replica) is a duplicate and is not stored again.
        """
        ...

    async def list_signals(
        self, *, service: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> SignalPage:
        """Newest first. ``cursor`` is the ``next_cursor`` of the previous page."""
        ...

    async def get_signal(self, signal_id: str) -> Signal | None: ...

    async def prune(self, *, older_than_seconds: float) -> int:
        """Forget signals (and their keys) received longer ago than this; return how many.

        Deletes in bounded batches, one transaction each, so other writes interleave.
        """
        ...


class DecisionStore(Protocol):
    """What the decider reads and writes: the signals to decide, and the history the
    rules weigh (deploys, firing alerts, past remediations)."""

    async def undecided_signals(
        self, *, limit: int, known: Mapping[int, Signal] | None = None
    ) -> UndecidedBatch:
        """Signals after the decision cursor, oldest first.

        ``known`` holds signals the caller already has, by seq (from ``RecordResult.seq``):
        the journal may return those instead of reading them back. Which seqs follow
        the cursor is always read from the journal, so ``known`` never adds, skips or
        reorders a signal."""
        ...

    async def record_decisions(
        self,
        decisions: Sequence[DecisionRecord],
        *,
        cursor: int,
        through_seq: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Store decisions, their remediations and outbox messages, and move the cursor
        from ``cursor`` to ``through_seq``, atomically.

        False, with nothing written, when the cursor is no longer ``cursor``: another
        replica decided these signals first. So each signal is decided exactly once.
        """
        ...

    async def service_events(
        self,
        *,
        service: str,
        kinds: Sequence[str],
        limit: int = 50,
        sources: Sequence[str] | None = None,
    ) -> list[StoredSignal]:
        """Journaled signals of these kinds for a service (deploys, migrations), newest first;
        only from ``sources`` when given (so untrusted signals cannot crowd out the limit)."""
        ...

    async def firing_alert_times(
        self, *, service: str, kinds: Sequence[str], since: datetime, until: datetime
    ) -> list[datetime]:
        """When firing alerts of these kinds started for a service, in [since, until)."""
        ...

    async def remediation_history(
        self, *, service: str, since: datetime
    ) -> list[RemediationSummary]:
        """Remediations of a service created since ``since`` (skipped ones excluded)."""
        ...

    async def circuit_inputs(self) -> CircuitInputs:
        """The breaker's record and what it weighs since the record last changed, read
        together (one read a batch, and no reset slips in between the parts)."""
        ...


class DecisionBacklogs(Protocol):
    async def decision_backlog(self) -> DecisionBacklog:
        """How many signals wait after the decision cursor, and since when, from one
        snapshot (for the gauges: deciding that falls behind shows before it is done)."""
        ...


class CircuitStore(Protocol):
    async def circuit(self) -> CircuitRecord: ...

    async def set_circuit(
        self, *, open: bool, reason: str | None, at: datetime, by: str | None = None
    ) -> None:
        """Open or close the breaker; ``by`` is the principal who did it (None: the engine)."""
        ...


class RemediationStore(Protocol):
    """Remediations as people see and steer them (API, CLI)."""

    async def list_remediations(
        self,
        *,
        service: str | None = None,
        status: RemediationStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RemediationPage:
        """Newest first, without decision and steps."""
        ...

    async def get_remediation(self, remediation_id: str) -> Remediation | None:
        """With its decision, steps and approval state."""
        ...

    async def approve_remediation(
        self,
        remediation_id: str,
        *,
        by: str,
        at: datetime,
        roles: Sequence[str] = (),
        comment: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Break-glass: ``awaiting_approval`` becomes ``planned`` whatever the policy
        says; False if it was not waiting. The API never calls it (approvals there are
        votes: ``ApprovalStore.cast_vote``); ``remediator approve`` on the journal file
        does, recording ``by`` (the local OS user), ``roles`` and ``comment``."""
        ...

    async def record_analysis(self, remediation_id: str) -> Analysis | None:
        """The analysis people last wrote into the record (None: nobody has)."""
        ...

    async def edit_record_analysis(
        self, remediation_id: str, *, changes: Mapping[str, Any], by: str, at: datetime
    ) -> Analysis | None:
        """Apply ``changes`` (root_cause, improvements, lessons; others kept) to the newest
        analysis and journal the result as a new version with its editor and time, in one
        transaction; None when there is no such remediation."""
        ...


def no_messages(_: VoteResult) -> Sequence[OutboxMessage]:
    return ()


class ApprovalStore(Protocol):
    """Plans awaiting approval: votes, withdrawal, escalation, expiry, and the review an
    emergency owes. Every write here is a compare-and-set on the remediation's status in
    one transaction with its outbox messages, so replicas (and an approval racing the
    expiry) never both win."""

    async def cast_vote(
        self,
        remediation_id: str,
        *,
        vote: Vote,
        outbox: Callable[[VoteResult], Sequence[OutboxMessage]] = no_messages,
    ) -> VoteResult:
        """Record ``vote`` and apply what the votes now amount to (``approvals.evaluate``):
        ``awaiting_approval`` becomes ``planned`` once every seat is filled, ``rejected`` at
        the first counted rejection. Cast at or past the request's expiry, nothing is
        recorded and the plan ends ``expired``. ``outbox(result)`` is written with it."""
        ...

    async def cancel_remediation(
        self,
        remediation_id: str,
        *,
        by: str,
        at: datetime,
        reason: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Withdraw a plan awaiting approval, or one planned and not yet claimed: it ends
        ``cancelled`` (``by`` recorded in its reason). False if it was neither."""
        ...

    async def due_approvals(self, *, now: datetime, limit: int) -> list[Remediation]:
        """Plans awaiting approval whose escalation or expiry is due at ``now``, oldest
        first, with their approval state (decision and steps not loaded)."""
        ...

    async def mark_escalated(
        self, remediation_id: str, *, at: datetime, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        """Note the escalation once: False if it was escalated before or is no longer
        awaiting approval (then ``outbox`` is not written either)."""
        ...

    async def expire_approval(
        self, remediation_id: str, *, at: datetime, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        """End a plan still awaiting approval at or past its expiry ``expired``; False
        (nothing written) otherwise."""
        ...

    async def close_review(
        self, remediation_id: str, *, by: str, at: datetime, comment: str | None = None
    ) -> bool:
        """Close the review an approved emergency owes; False if none is owed (not an
        emergency, never approved) or it was closed before."""
        ...


class ExecutionLog(Protocol):
    """Claims and timelines of running plans. A claim names the instance that holds it;
    every write about a claimed remediation names it too and is refused (ClaimLost)
    once another instance took the claim over."""

    async def runnable_remediations(self, *, limit: int) -> list[Remediation]:
        """Unclaimed plans (``planned``, and ``dry-run`` ones to rehearse), oldest first,
        with their decisions."""
        ...

    async def claim_remediation(
        self,
        remediation_id: str,
        *,
        by: str,
        at: datetime,
        to: RemediationStatus,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Claim it for instance ``by`` and move it to ``to`` (``running``, or ``dry-run``
        to rehearse); False if already claimed or finished. IllegalTransition if the
        lifecycle does not allow it."""
        ...

    async def unfinished_claims(self, *, holder: str, stale_before: datetime) -> list[Remediation]:
        """Claimed, never finished, and held by ``holder`` or by an instance whose last
        heartbeat is older than ``stale_before`` (a crashed or stopped replica), with
        decisions and steps, oldest first."""
        ...

    async def take_over_claim(
        self, remediation_id: str, *, from_holder: str, by: str, at: datetime
    ) -> bool:
        """Move an unfinished claim from ``from_holder`` to ``by``; False if it is no
        longer ``from_holder``'s (someone else took it, or it finished)."""
        ...

    async def step_started(
        self, remediation_id: str, *, holder: str, idx: int, kind: str, at: datetime
    ) -> None: ...

    async def step_finished(
        self,
        remediation_id: str,
        *,
        holder: str,
        idx: int,
        status: StepStatus,
        detail: dict[str, Any],
        at: datetime,
    ) -> None: ...

    async def remediation_steps(self, remediation_id: str) -> list[StepRecord]: ...

    async def finish_remediation(
        self,
        remediation_id: str,
        *,
        holder: str,
        status: RemediationStatus,
        reason: str | None,
        at: datetime,
        outbox: Sequence[OutboxMessage] = (),
    ) -> None:
        """Record the end. IllegalTransition if the lifecycle does not allow ``status``
        (a dry run ends ``dry-run``)."""
        ...


class Outbox(Protocol):
    """Messages to publish, leased to one relay at a time; ids make redelivery
    detectable downstream (engine/outbox.py: how outcome events go out once)."""

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Add messages to the outbox (ids already present are ignored)."""
        ...

    async def pending(
        self, *, channel: str, limit: int, holder: str, at: datetime, lease_seconds: float
    ) -> list[PendingMessage]:
        """Unpublished messages of a channel, oldest first, leased to ``holder`` for
        ``lease_seconds`` so no other replica relays them meanwhile. Each says whether
        it may have been sent already (``PendingMessage.maybe_sent``)."""
        ...

    async def renew_lease(
        self,
        *,
        channel: str,
        ids: Sequence[str],
        holder: str,
        at: datetime,
        lease_seconds: float,
    ) -> bool:
        """Extend ``holder``'s lease on these messages to ``at + lease_seconds`` if
        every one is still unpublished and leased to ``holder`` (even if the lease ran
        out meanwhile, nobody took it); otherwise change nothing and return False:
        another relay took them over, and this one must not publish them.

        A compare-and-set, ordered with ``pending`` of the same channel: once it
        returned True, no other relay leases these messages before the new expiry."""
        ...

    async def mark_published(self, *, ids: Sequence[str], at: datetime) -> None: ...

    async def mark_failed_attempt(
        self, *, ids: Sequence[str], error: str, holder: str | None = None
    ) -> None:
        """Count a failed attempt and release the lease (retried later).

        With ``holder``, only that holder's lease is released: a relay whose lease ran
        out while it was failing must not free messages another relay now holds."""
        ...

    async def mark_dead(self, *, ids: Sequence[str], error: str, at: datetime) -> None:
        """Give up on messages that can never be delivered (kept, with the error)."""
        ...

    async def outbox_backlog(self) -> dict[str, int]:
        """Unpublished message count per channel (for metrics)."""
        ...


class SlackThreads(Protocol):
    """Where each remediation's Slack message is, so later stages update it."""

    async def slack_ref(self, remediation_id: str) -> SlackMessageRef | None: ...

    async def save_slack_ref(self, remediation_id: str, ref: SlackMessageRef) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AutomationLevelChange:
    """A service's automation level as the daemon found it in the catalog it loaded."""

    service: str
    level: AutomationLevel
    previous: AutomationLevel | None  # None: the first level recorded for the service
    changed_at: datetime
    # What made the change, as far as the daemon can know: the rule files it loaded
    # (path and digest); a file carries no author.
    changed_by: str


class AutomationLevels(Protocol):
    """Each service's automation level over time: a change is recorded when a daemon
    loads a catalog whose level for a service differs from the last one recorded."""

    async def record_automation_levels(
        self, levels: Mapping[str, AutomationLevel], *, by: str, at: datetime
    ) -> list[AutomationLevelChange]:
        """Record, for each service, ``levels[service]`` when it differs from the last
        level recorded for it (or none was); return the changes recorded, by service name.

        Atomic: replicas loading the same catalog at once record each change once.
        Services missing from ``levels`` are left as they are."""
        ...

    async def automation_levels(self) -> dict[str, AutomationLevelChange]:
        """The last change recorded for each service."""
        ...

    async def automation_level_history(
        self, *, service: str, limit: int = 50
    ) -> list[AutomationLevelChange]:
        """A service's recorded changes, newest first."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceOutcomes:
    """What a service's remediations created in a window came to."""

    service: str
    # Plans meant to change something (not skipped, not dry runs, not notify_only),
    # automatic or requested, whatever became of them (approval, run, end).
    plans: int
    succeeded: int
    failed: int
    needs_human: int
    # Plans the service's automation level kept to a notification (automation_notify).
    would_have_run: int
    # Median of (finished - created) over the succeeded ones; None without any.
    median_seconds_to_recover: float | None


class ServiceStats(Protocol):
    async def service_outcomes(
        self, *, since: datetime, until: datetime
    ) -> dict[str, ServiceOutcomes]:
        """Per service, the remediations created in [since, until); services with none
        are absent."""
        ...


class Journal(
    JournalLifecycle,
    SignalStore,
    DecisionStore,
    DecisionBacklogs,
    CircuitStore,
    RemediationStore,
    ApprovalStore,
    ExecutionLog,
    Outbox,
    SlackThreads,
    AutomationLevels,
    ServiceStats,
    Protocol,
):
    """Every role: what the runtime builds and hands out, one role to each component."""
