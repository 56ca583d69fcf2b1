"""Runs the plans the decision engine journaled, once each, and always to an end.

Per service one plan at a time (an in-process lane, plus a ServiceLock — a
Kubernetes Lease — so replicas never act on one service together), a global cap on
plans changing things at once (a plan that waits or verifies gives its turn up), and
every step journaled before and after it runs. A claim is a
compare-and-set in the journal: a plan is claimed by one executor, once.

A lock held elsewhere (or an error taking it) is retried per service with
exponential backoff and equal jitter; while a service waits, no pass asks again. The
lock is checked before every step: once it is lost (another instance took the
Lease), the plan stops before its next step and ends ``needs_human``; the other
holder's Lease is left alone.

Every plan this process claims ends: a step's own errors fail it (or need a human),
and so does anything nobody planned for (a bug in a runner, a plan that does not
parse): the plan ends ``failed`` with the exception's type and message, its lock is
released and its service's lane freed. When even the journal cannot take the end
for now, the end is kept in memory and written on a later pass (with backoff), the
lane staying taken until then; a journal fault in the middle of a plan is settled
on a later pass exactly as a restart would settle it (below).

After a crash the timeline tells what was in flight. A plan whose last step
finished resumes with the next; a step that only reads or waits (rollout status,
verification) runs again; a mutating step that started but never finished ends the
plan as ``needs_human``: whether it took effect is unknown, and re-running a
mutation blindly is exactly what this daemon must never do.

Claims name their holder, and every instance beats a heartbeat into the journal.
Recovery runs at start and then periodically: it settles this instance's own
leftover claims, and takes over (compare-and-set) the claims of an instance whose
heartbeat is older than ``claim_stale_seconds`` (a crashed, stopped or cut-off
replica), never a live one's. A taken-over plan is settled from its timeline as
above, and takes the service's Lease before any step runs. Should the old holder
come back, its next write is refused (``ClaimLost``) and its run ends quietly: the
plan is someone else's now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.domain.lifecycle import (
    ClaimLost,
    IllegalTransition,
    Remediation,
    RemediationStatus,
    StepStatus,
    utc_text,
)
from remediator.domain.outcomes import (
    incident_cdevent,
    remediation_outcome_event,
    rollback_target,
    rolledback_cdevent,
)
from remediator.domain.plans import ActionKind, Step, StepKind
from remediator.domain.record import FAILED_STEP_EVIDENCE, stage_for
from remediator.domain.steps import VERIFICATION_KINDS
from remediator.engine.backoff import Backoff
from remediator.engine.notify import notice_messages
from remediator.ports import ExecutionLog, NeedsHuman, OutboxMessage, ServiceLock, StepRunner

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
CLAIM_STALE_SECONDS = 30.0
RECOVERY_INTERVAL_SECONDS = 10.0
COMPONENT = "executor"  # the label this component reports its internal errors under
_MESSAGE_CHARS = 200  # of an unexpected exception's message, in a plan's reason


class LockAttempt(StrEnum):
    """What one attempt to take a service's lock came to (a metric label)."""

    ACQUIRED = "acquired"
    HELD_ELSEWHERE = "held_elsewhere"
    ERROR = "error"


def describe(exc: BaseException) -> str:
    """An exception as one short line for a plan's reason: its type and message."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if len(message) > _MESSAGE_CHARS:
        message = message[: _MESSAGE_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _error_detail(exc: BaseException) -> dict[str, str]:
    return {"error": str(exc), "type": type(exc).__name__}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ending:
    """How a plan ends; kept until the journal has taken it."""

    status: RemediationStatus
    reason: str | None
    failed_step: int | None = None  # a step started and not finished: it is marked failed
    step_detail: dict[str, Any] | None = None


class _Turn:
    """A plan's share of the cap on plans at once (``max_concurrency``). Held while the
    plan changes things; given up while it only waits and reads (a rollout, the
    verification checks, the record's evidence), so that another service's plan can act
    meanwhile instead of queueing behind a check that takes minutes."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self.held = False

    async def take(self) -> None:
        if not self.held:
            await self._slots.acquire()
            self.held = True

    def give_up(self) -> None:
        if self.held:
            self._slots.release()
            self.held = False


# Steps that change nothing the plan acts on: they run without a turn (see _Turn).
_WAITING_KINDS = VERIFICATION_KINDS | {StepKind.RECORD_EVIDENCE}


@dataclass(slots=True, kw_only=True)
class _Run:
    """One plan in this process, and how far the journal knows of it."""

    item: Remediation
    rehearsal: bool
    claimed: bool
    step: int | None = None  # journaled as started, not yet as finished
    step_kind: str | None = None
    ending: _Ending | None = None  # decided; written unless the journal refused it
    acting_since: datetime | None = None  # when its first step started (for its duration)
    verified_at: datetime | None = None  # when its last verification step passed

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def service(self) -> str:
        return self.item.service

    @property
    def namespace(self) -> str:
        return self.item.namespace or ""


class Executor:
    def __init__(
        self,
        *,
        journal: ExecutionLog,
        runner: StepRunner,
        instance_id: str,
        lock: ServiceLock | None = None,
        dry_run: bool = False,
        max_concurrency: int = 4,
        step_retries: int = 3,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        outcome_channel: str | None = None,
        notice_channels: tuple[str, ...] = (),
        drain_timeout_seconds: float = 60.0,
        lock_retry_base_seconds: float = 2.0,
        lock_retry_max_seconds: float = 60.0,
        claim_stale_seconds: float = CLAIM_STALE_SECONDS,
        recovery_interval_seconds: float = RECOVERY_INTERVAL_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        on_finished: Callable[[str, str], None] | None = None,
        on_lock_attempt: Callable[[str], None] | None = None,
        on_lease_lost: Callable[[str], None] | None = None,
        on_internal_error: Callable[[str], None] | None = None,
        on_first_action: Callable[[float], None] | None = None,
        on_run_duration: Callable[[str, float], None] | None = None,
        on_verified: Callable[[float], None] | None = None,
        failpoints: Failpoints = NO_FAILPOINTS,
    ) -> None:
        """``on_first_action(seconds)``: a plan's first step started, that long after it
        was decided (or approved); ``on_run_duration(status, seconds)``: a plan ended,
        that long after its first step started; ``on_verified(seconds)``: a plan
        succeeded, its last verification step having passed that long after its first
        step started. None hears of dry runs."""
        self._on_first_action = on_first_action
        self._on_run_duration = on_run_duration
        self._on_verified = on_verified
        self._journal = journal
        self._failpoints = failpoints
        self._runner = runner
        self._instance_id = instance_id
        self._lock = lock
        self._dry_run = dry_run
        self._slots = asyncio.Semaphore(max_concurrency)
        self._step_retries = step_retries
        self._clock = clock
        self._sleep = sleep
        self._outcome_channel = outcome_channel
        self._notice_channels = notice_channels
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._drain_timeout = drain_timeout_seconds
        self._retry_max = lock_retry_max_seconds
        # Per service: when its lock may be asked for again.
        self._lock_waits = Backoff(
            base_seconds=lock_retry_base_seconds, max_seconds=lock_retry_max_seconds, rand=rand
        )
        # Plans claimed here whose end the journal has not taken yet, by id.
        self._unsettled: dict[str, _Run] = {}
        self._settle_waits = Backoff(
            base_seconds=lock_retry_base_seconds, max_seconds=lock_retry_max_seconds, rand=rand
        )
        # An instance without a heartbeat for this long is gone: its claims are taken over.
        self._claim_stale = timedelta(seconds=claim_stale_seconds)
        self._recovery_interval = timedelta(seconds=recovery_interval_seconds)
        # Between looks for plans other replicas decided or approved; this process's own
        # decisions and approvals wake the executor at once (``wake``).
        self._poll_seconds = poll_seconds
        self._next_recovery: datetime | None = None  # None: not recovered yet
        self._active: set[str] = set()  # plans running in this process, by id
        # Plans whose end the journal can never take (a bug): not recovered again here.
        self._given_up: set[str] = set()
        self._on_finished = on_finished
        self._on_lock_attempt = on_lock_attempt
        self._on_lease_lost = on_lease_lost
        self._on_internal_error = on_internal_error

    def wake(self) -> None:
        """A plan may have become runnable (decided, approved, a lane freed): the next
        pass starts now instead of after the poll interval."""
        self._wake.set()

    async def run(self) -> None:
        """Root task: recover what a crash left, then run plans as they are journaled,
        recovering the claims of instances that stopped beating as it goes."""
        failed_passes = 0
        try:
            while True:
                self._wake.clear()
                try:
                    await self.run_pass()
                    failed_passes = 0
                except TemporaryError as exc:
                    log.warning("executor paused, journal unavailable: %s", exc)
                    await self._sleep(exc.delay)
                    continue
                except Exception as exc:  # noqa: BLE001 - counted and logged, then retried
                    # A pass that breaks must not stop every later plan: count, wait, retry.
                    self._internal_error(f"executor pass failed ({describe(exc)})", exc)
                    failed_passes += 1
                    doubled = self._poll_seconds * 2.0 ** min(failed_passes, 16)
                    await self._sleep(min(self._retry_max, doubled))
                    continue
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that arrives as the wait ends, and shutdown relies on it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_pass_in()):
                        await self._wake.wait()
        finally:
            await self.drain()

    def _next_pass_in(self) -> float:
        """Seconds until the next pass: the poll interval, or sooner when a wait ends."""
        now = self._clock()
        waits = (
            self._lock_waits.next_due(now),
            self._settle_waits.next_due(now),
            self._next_recovery,
        )
        due = [d for d in waits if d is not None]
        if not due:
            return self._poll_seconds
        return max(0.0, min(self._poll_seconds, (min(due) - now).total_seconds()))

    def _recovery_due(self) -> bool:
        return self._next_recovery is None or self._clock() >= self._next_recovery

    async def run_pass(self) -> int:
        """One pass of the root task: recovery when it is due (at once on the first
        pass, then every ``recovery_interval_seconds``), then every runnable plan that
        may start; return how many plans started or resumed."""
        if self._recovery_due() and not self._stopping:
            await self.recover()
        return await self.start_runnable()

    async def drain(self, grace_seconds: float | None = None) -> None:
        """On shutdown: every running plan finishes the step it is in, then pauses.

        A paused plan is claimed with its last step finished, so the next start resumes
        it with the following step. Only a step still running after the drain timeout
        (``grace_seconds``, else the constructor's) is cancelled; the restart then treats it as
        interrupted (needs_human if it mutates).
        """
        self._stopping = True
        if self._unsettled:
            log.warning("%d claimed plan(s) not ended yet, left to the next start's recovery: %s",
                        len(self._unsettled), ", ".join(sorted(self._unsettled)))  # fmt: skip
        tasks = list(self._tasks)
        if not tasks:
            return
        timeout = self._drain_timeout if grace_seconds is None else grace_seconds
        log.info("waiting up to %.0fs for %d running plan(s) to finish their step",
                 timeout, len(tasks))  # fmt: skip
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def start_runnable(self) -> int:
        """Settle what is due, then start every runnable plan whose service is idle and
        not waiting for its lock; return how many plans started or resumed."""
        if self._stopping:
            return 0
        started = await self._settle_due()
        now = self._clock()
        items = await self._journal.runnable_remediations(limit=100)
        # A service whose plans are gone (run elsewhere) waits for nothing any more.
        waiting = [item.service for item in items]
        self._lock_waits.keep_only(waiting + [run.service for run in self._unsettled.values()])
        for item in items:
            service = item.service
            if service in self._busy:
                continue  # its lane is taken; the next pass picks it up
            if not self._lock_waits.ready(service, now):
                continue  # its lock was refused; the backoff says when to ask again
            self._start(item)
            started += 1
        return started

    async def run_until_idle(self) -> None:
        """Start and finish everything runnable now (tests, one-shot CLI use)."""
        while await self.start_runnable():
            await asyncio.gather(*list(self._tasks))

    def _start(self, item: Remediation, *, resume_at: int | None = None) -> None:
        self._busy.add(item.service)
        self._active.add(item.id)
        task = asyncio.create_task(self._execute(item, resume_at=resume_at), name=f"plan-{item.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rehearsal(self, item: Remediation) -> bool:
        return item.status is RemediationStatus.DRY_RUN or self._dry_run

    # -- one plan ------------------------------------------------------------------
    async def _execute(self, item: Remediation, *, resume_at: int | None = None) -> None:
        run = _Run(item=item, rehearsal=self._rehearsal(item), claimed=resume_at is not None)
        turn = _Turn(self._slots)
        try:
            await turn.take()
            await self._run_guarded(run, resume_at, turn)
        finally:
            turn.give_up()
            self._active.discard(run.id)
            if run.id not in self._unsettled:
                self._busy.discard(run.service)
            self.wake()

    async def _run_guarded(self, run: _Run, resume_at: int | None, turn: _Turn) -> None:
        """Run the plan under its lock; whatever is raised, end it or keep it to settle."""
        locked = False
        try:
            locked = await self._take_lock(run)
            if locked:
                await self._claimed_run(run, resume_at, turn)
        except asyncio.CancelledError:
            raise
        except ClaimLost as exc:
            self._claim_lost(run, exc)
        except TemporaryError as exc:
            # Every other source of TemporaryError is handled where it is raised: this
            # is the journal, refusing a write for now.
            self._journal_unavailable(run, exc)
        except Exception as exc:  # noqa: BLE001 - any error ends the plan, counted and logged
            await self._contain(run, exc)
        finally:
            if locked:
                await self._release(run)

    async def _take_lock(self, run: _Run) -> bool:
        if self._lock is None:
            return True
        service = run.service
        try:
            acquired = await self._lock.acquire(service=service, namespace=run.namespace)
        except TemporaryError as exc:
            self._lock_refused(run, LockAttempt.ERROR, exc)
            return False
        except PermanentError as exc:
            self._count_lock_attempt(LockAttempt.ERROR)
            # No lock can ever be had (missing namespace, RBAC): acting without one
            # could race another replica, so the plan fails, loudly, instead of waiting.
            if run.claimed or await self._claim(run):
                reason = f"cannot take the lock of {service}: {exc}"
                await self._end(run, _Ending(status=RemediationStatus.FAILED, reason=reason))
            return False
        if not acquired:
            self._lock_refused(run, LockAttempt.HELD_ELSEWHERE, None)
            return False
        self._count_lock_attempt(LockAttempt.ACQUIRED)
        if self._lock_waits.waiting(service):
            log.debug("%s: took the lock of %s after %d refusal(s)",
                      run.id, service, self._lock_waits.failures(service))  # fmt: skip
        self._lock_waits.succeeded(service)
        return True

    def _lock_refused(self, run: _Run, result: LockAttempt, exc: TemporaryError | None) -> None:
        self._count_lock_attempt(result)
        first = not self._lock_waits.waiting(run.service)
        delay = self._lock_waits.failed(run.service, self._clock())
        why = "another instance holds it" if exc is None else f"taking it failed: {exc}"
        # One line when a wait begins, not one per attempt.
        level = (logging.INFO if exc is None else logging.WARNING) if first else logging.DEBUG
        log.log(level, "%s: cannot take the lock of %s (%s); next attempt in %.1fs",
                run.id, run.service, why, delay)  # fmt: skip
        if run.claimed:
            # A plan resumed after a restart is no longer runnable: keep it here, to
            # resume once the service's wait is over.
            self._unsettled[run.id] = run

    async def _release(self, run: _Run) -> None:
        if self._lock is None:
            return
        try:
            await self._lock.release(service=run.service, namespace=run.namespace)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged; the Lease expires by itself
            if not isinstance(exc, TemporaryError | PermanentError):
                self._internal_error(f"{run.id}: releasing the lock of {run.service}", exc)
            # A Lease that is not released expires by itself one duration after its
            # last renewal; nothing here is worth failing the plan over.
            log.warning("%s: could not release the lock of %s (it expires by itself): %s",
                        run.id, run.service, exc)  # fmt: skip

    async def _claim(self, run: _Run, outbox: list[OutboxMessage] | None = None) -> bool:
        # A rehearsal stays a dry run for all to see; a real run is running.
        to = RemediationStatus.DRY_RUN if run.rehearsal else RemediationStatus.RUNNING
        run.claimed = await self._journal.claim_remediation(
            run.id, by=self._instance_id, at=self._clock(), to=to, outbox=outbox or []
        )
        return run.claimed

    def _claim_lost(self, run: _Run, exc: ClaimLost) -> None:
        """Another instance took the plan over (this one was stopped or cut off for
        longer than claims stay with a silent holder): it is theirs to run and end."""
        self._unsettled.pop(run.id, None)
        log.warning("%s: %s; stopped here, nothing more is done by this instance", run.id, exc)

    async def _claimed_run(self, run: _Run, resume_at: int | None, turn: _Turn) -> None:
        item, rid = run.item, run.id
        if resume_at is None:
            started = [] if run.rehearsal else self._messages(item, RemediationStatus.RUNNING)
            if not await self._claim(run, started):
                return  # someone else claimed it first
            resume_at = 0
            action = item.action.value if item.action else None
            log.info("%s: running %s plan for %s%s", rid, action, item.service,
                     " (dry run)" if run.rehearsal else "")  # fmt: skip
        plan = item.plan()
        context: dict[str, Any] = {}
        for idx, step in enumerate(plan.steps):
            if idx < resume_at:
                continue
            if self._stopping:
                log.warning("%s: paused before step %d (%s) for shutdown; resumes on restart",
                            rid, idx, step.kind.value)  # fmt: skip
                return
            if step.kind in _WAITING_KINDS:
                turn.give_up()
            else:
                await turn.take()
            if not self._still_locked(run):
                await self._end(run, self._lease_lost(run, idx, len(plan.steps), step))
                return
            started_at = self._clock()
            await self._journal.step_started(
                rid, holder=self._instance_id, idx=idx, kind=step.kind.value, at=started_at
            )
            if idx == 0:
                self._first_action(run, started_at)
            run.step, run.step_kind = idx, step.kind.value
            try:
                detail = await self._run_step(step, service=item.service,
                                              dry_run=run.rehearsal, context=context)  # fmt: skip
            except NeedsHuman as exc:
                ending = self._step_ending(RemediationStatus.NEEDS_HUMAN, idx, step, exc)
                await self._end(run, await self._with_evidence(run, idx, ending, context))
                return
            except (PermanentError, TemporaryError) as exc:
                ending = self._step_ending(RemediationStatus.FAILED, idx, step, exc)
                await self._end(run, await self._with_evidence(run, idx, ending, context))
                return
            context[f"step{idx}"] = detail
            finished_at = self._clock()
            await self._journal.step_finished(
                rid, holder=self._instance_id, idx=idx, status=StepStatus.SUCCEEDED,
                detail=detail, at=finished_at,
            )  # fmt: skip
            if step.kind in VERIFICATION_KINDS:
                run.verified_at = finished_at
            run.step = run.step_kind = None
        await self._end(run, _Ending(status=RemediationStatus.SUCCEEDED, reason=None))

    def _first_action(self, run: _Run, started_at: datetime) -> None:
        run.acting_since = started_at
        if run.rehearsal or self._on_first_action is None:
            return
        item = run.item
        # A plan that waited for approval was runnable from its approval on.
        runnable_since = item.approved_at or item.created_at
        # Decided on another host whose clock may run ahead: no negatives.
        self._on_first_action(max(0.0, (started_at - runnable_since).total_seconds()))

    def _still_locked(self, run: _Run) -> bool:
        return self._lock is None or self._lock.held(service=run.service)

    def _lease_lost(self, run: _Run, idx: int, total: int, step: Step) -> _Ending:
        if self._on_lease_lost is not None:
            self._on_lease_lost(run.service)
        reason = (
            f"the lock (Lease) of {run.service} was lost before step {idx + 1} of {total} "
            f"({step.kind.value}): another instance may be acting on it, so nothing more "
            "was done here; check the workload and close this remediation by hand"
        )
        return _Ending(status=RemediationStatus.NEEDS_HUMAN, reason=reason)

    @staticmethod
    def _step_ending(status: RemediationStatus, idx: int, step: Step, exc: Exception) -> _Ending:
        # What a runner saw (a failed verification's evidence) stays with the step.
        evidence = exc.detail if isinstance(exc, NeedsHuman) else {}
        return _Ending(
            status=status,
            reason=f"{step.kind.value}: {exc}",
            failed_step=idx,
            step_detail={**evidence, **_error_detail(exc)},
        )

    async def _with_evidence(
        self, run: _Run, failed_idx: int, ending: _Ending, context: dict[str, Any]
    ) -> _Ending:
        """``ending`` with the evidence the plan's later record_evidence step gathers.

        A plan that stops at a failed step (a verification that did not pass, above all)
        never reaches that step, yet it is the plan people must look into. The step only
        reads, so it runs here, once, and what it saw is journaled with the failed step:
        kept in that step's detail rather than as a step of its own, so that recovery after
        a crash still sees the failed step last and never resumes past it.
        """
        later = run.item.plan().steps[failed_idx + 1 :]
        step = next((s for s in later if s.kind is StepKind.RECORD_EVIDENCE), None)
        if step is None or self._stopping:
            return ending
        try:
            evidence = await self._runner.run(step, service=run.service,
                                              dry_run=run.rehearsal, context=context)  # fmt: skip
        except asyncio.CancelledError:
            raise
        except (NeedsHuman, PermanentError, TemporaryError) as exc:
            evidence = {"error": f"evidence could not be recorded: {exc}"}
        except Exception as exc:  # noqa: BLE001 - the plan's own ending must not be lost
            self._internal_error(f"{run.id}: recording evidence of a failed plan", exc)
            evidence = {"error": f"evidence could not be recorded: {describe(exc)}"}
        detail = {**(ending.step_detail or {}), FAILED_STEP_EVIDENCE: evidence}
        return replace(ending, step_detail=detail)

    async def _run_step(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        self._failpoints.hit("executor.step", service)
        attempt = 0
        while True:
            try:
                return await self._runner.run(step, service=service, dry_run=dry_run,
                                              context=context)  # fmt: skip
            except TemporaryError as exc:
                attempt += 1
                if attempt > self._step_retries:
                    raise
                log.warning("%s step failed (attempt %d, retrying in %.1fs): %s",
                            step.kind.value, attempt, exc.delay, exc)  # fmt: skip
                await self._sleep(exc.delay)

    # -- ending a plan, whatever happened ----------------------------------------------
    async def _end(self, run: _Run, ending: _Ending) -> None:
        run.ending = ending  # kept, should the journal refuse it now
        await self._write_ending(run)

    async def _write_ending(self, run: _Run) -> None:
        ending = run.ending
        assert ending is not None
        if ending.failed_step is not None:
            await self._journal.step_finished(
                run.id, holder=self._instance_id, idx=ending.failed_step,
                status=StepStatus.FAILED, detail=ending.step_detail or {}, at=self._clock(),
            )  # fmt: skip
        await self._finish(run.item, ending.status, ending.reason, run.rehearsal)
        self._ran(run, ending.status)

    def _ran(self, run: _Run, status: RemediationStatus) -> None:
        """Time the run from its first step: known when that step started here, else
        from the timeline a resumed plan was loaded with."""
        if run.rehearsal or self._on_run_duration is None:
            return
        since = run.acting_since
        if since is None:
            first = next((step for step in run.item.steps or () if step.idx == 0), None)
            since = first.started_at if first is not None else None
        if since is not None:
            elapsed = max(0.0, (self._clock() - since).total_seconds())
            self._on_run_duration(status.value, elapsed)
        verified = run.verified_at
        if (status is RemediationStatus.SUCCEEDED and since is not None
                and verified is not None and self._on_verified is not None):  # fmt: skip
            self._on_verified(max(0.0, (verified - since).total_seconds()))

    async def _contain(self, run: _Run, exc: Exception) -> None:
        """Something nobody planned for: end the plan ``failed`` rather than leave it
        running with its service blocked."""
        self._internal_error(f"{run.id}: plan stopped by an unexpected error", exc)
        if run.ending is None:
            try:
                if not run.claimed and not await self._claim(run):
                    return  # not ours: whoever claimed it ends it
                where = "" if run.step_kind is None else f"{run.step_kind}: "
                run.ending = _Ending(
                    status=RemediationStatus.FAILED,
                    reason=f"{where}internal error: {describe(exc)}",
                    failed_step=run.step,
                    step_detail=_error_detail(exc) if run.step is not None else None,
                )
                await self._write_ending(run)
                return
            except asyncio.CancelledError:
                raise
            except ClaimLost as lost:
                self._claim_lost(run, lost)
                return
            except Exception as again:  # noqa: BLE001 - kept and retried, or logged below
                exc = again
        if isinstance(exc, IllegalTransition):
            log.error("%s: the journal refuses this end (%s); the plan is left as it has it",
                      run.id, exc)  # fmt: skip
            self._give_up(run)
            return
        if run.claimed:
            self._settle_later(run, exc)
        else:
            log.error("%s: could not claim the plan to end it (%s); a later pass tries again",
                      run.id, describe(exc))  # fmt: skip

    def _journal_unavailable(self, run: _Run, exc: TemporaryError) -> None:
        if run.claimed:
            self._settle_later(run, exc)
        else:
            log.warning("%s: journal unavailable before the plan was claimed (%s); "
                        "a later pass runs it", run.id, exc)  # fmt: skip

    def _settle_later(self, run: _Run, exc: Exception) -> None:
        """Keep a claimed plan the journal could not end (or follow) now; a later pass
        writes its end, or, when none was decided yet, settles it as recovery would."""
        first = run.id not in self._unsettled and not self._settle_waits.waiting(run.id)
        delay = self._settle_waits.failed(run.id, self._clock())
        self._unsettled[run.id] = run
        what = (
            f"ending it {run.ending.status.value}"
            if run.ending is not None
            else "following its timeline"
        )
        log.log(logging.ERROR if first else logging.DEBUG,
                "%s: the journal refused %s (%s); retrying in %.1fs, %s stays blocked until then",
                run.id, what, exc, delay, run.service)  # fmt: skip

    async def _settle_due(self) -> int:
        """Write the ends the journal refused before, or recover those plans; return
        how many resumed."""
        resumed = 0
        now = self._clock()
        for rid, run in list(self._unsettled.items()):
            if not (
                self._settle_waits.ready(rid, now) and self._lock_waits.ready(run.service, now)
            ):
                continue
            del self._unsettled[rid]
            try:
                if run.ending is not None:
                    await self._write_ending(run)
                elif await self._recover(run):
                    resumed += 1
                    self._settle_waits.succeeded(rid)
                    continue  # the resumed plan holds the lane now
            except asyncio.CancelledError:
                self._unsettled[rid] = run
                raise
            except ClaimLost as exc:
                self._claim_lost(run, exc)
            except IllegalTransition as exc:
                # Retrying cannot change the lifecycle.
                self._internal_error(f"{rid}: the journal refuses this end", exc)
                self._give_up(run)
            except Exception as exc:  # noqa: BLE001 - kept and retried with backoff
                if not isinstance(exc, TemporaryError):
                    self._internal_error(f"{rid}: settling the plan", exc)
                    if run.ending is None:
                        # Whatever made its timeline unreadable, the plan must still end.
                        run.ending = _Ending(status=RemediationStatus.FAILED,
                                             reason=f"internal error: {describe(exc)}")  # fmt: skip
                self._settle_later(run, exc)
                continue
            self._settle_waits.succeeded(rid)
            self._busy.discard(run.service)
        return resumed

    async def _finish(
        self, item: Remediation, status: RemediationStatus, reason: str | None, rehearsal: bool
    ) -> None:
        if rehearsal:
            # A dry run stays one; its timeline shows what would have happened.
            await self._journal.finish_remediation(
                item.id, holder=self._instance_id, status=RemediationStatus.DRY_RUN,
                reason=reason, at=self._clock(),
            )  # fmt: skip
            log.info("%s: dry run finished (%s)%s", item.id, status.value,
                     f": {reason}" if reason else "")  # fmt: skip
            return
        await self._journal.finish_remediation(
            item.id,
            holder=self._instance_id,
            status=status,
            reason=reason,
            at=self._clock(),
            outbox=self._messages(item, status),
        )
        action = item.action.value if item.action else None
        if self._on_finished is not None:
            self._on_finished(action or "none", status.value)
        level = logging.INFO if status is RemediationStatus.SUCCEEDED else logging.ERROR
        log.log(level, "%s: %s %s%s", item.id, action, status.value,
                f": {reason}" if reason else "")  # fmt: skip

    def _messages(self, item: Remediation, status: RemediationStatus) -> list[OutboxMessage]:
        at = self._clock()
        messages = notice_messages(
            remediation_id=item.id,
            stage=stage_for(status),
            channels=self._notice_channels,
            at=at,
        )
        if self._outcome_channel is not None:
            events = [
                remediation_outcome_event(item, status=status, at=at),
                *_cdevents(item, status, at),
            ]
            messages += [
                OutboxMessage(
                    id=event["id"],
                    channel=self._outcome_channel,
                    key=item.service,
                    payload=event,
                    created_at=at,
                )
                for event in events
            ]
        return messages

    # -- counting --------------------------------------------------------------------
    def _count_lock_attempt(self, result: LockAttempt) -> None:
        if self._on_lock_attempt is not None:
            self._on_lock_attempt(result.value)

    def _internal_error(self, what: str, exc: BaseException) -> None:
        if self._on_internal_error is not None:
            self._on_internal_error(COMPONENT)
        log.error("%s: %s", what, describe(exc), exc_info=exc)

    def _give_up(self, run: _Run) -> None:
        """The journal will never take this plan's end from here (an illegal transition:
        a bug): stop trying, and leave the plan as the journal has it."""
        self._unsettled.pop(run.id, None)
        self._given_up.add(run.id)

    # -- recovery --------------------------------------------------------------------
    async def recover(self) -> None:
        """Decide, for each plan claimed but unfinished by this instance in an earlier
        life or by an instance that stopped beating, what is safe; then settle them."""
        now = self._clock()
        claims = await self._journal.unfinished_claims(
            holder=self._instance_id, stale_before=now - self._claim_stale
        )
        for item in claims:
            if item.id in self._active or item.id in self._unsettled or item.id in self._given_up:
                continue  # running here, or already in hand
            if item.claimed_by != self._instance_id:
                if item.service in self._busy:
                    continue  # one plan per service here: the next recovery looks again
                taken = await self._take_over(item, now)
                if taken is None:
                    continue
                item = taken
            self._busy.add(item.service)
            self._unsettled[item.id] = _Run(
                item=item, rehearsal=self._rehearsal(item), claimed=True
            )
        self._next_recovery = now + self._recovery_interval
        await self._settle_due()

    async def _take_over(self, item: Remediation, now: datetime) -> Remediation | None:
        """Take the claim of a silent instance (compare-and-set); None if another
        instance was first or the plan ended meanwhile."""
        holder = item.claimed_by
        if holder is None or self._stopping:
            return None
        if not await self._journal.take_over_claim(
            item.id, from_holder=holder, by=self._instance_id, at=now
        ):
            return None
        log.warning("%s: took over the %s plan of %s from %s, which has not beaten a "
                    "heartbeat for %.0fs", item.id, item.action or "-", item.service, holder,
                    self._claim_stale.total_seconds())  # fmt: skip
        return item.model_copy(update={"claimed_by": self._instance_id})

    async def _recover(self, run: _Run) -> bool:
        """Settle one claimed plan from its timeline; True when it resumed."""
        rid = run.id
        steps = await self._journal.remediation_steps(rid)
        last = steps[-1] if steps else None
        if last is None or last.status is StepStatus.SUCCEEDED:
            resume_at = 0 if last is None else last.idx + 1
        elif last.status is StepStatus.FAILED:
            reason = f"{last.kind}: {last.detail}"
            await self._end(run, _Ending(status=RemediationStatus.FAILED, reason=reason))
            return False
        elif run.rehearsal or self._runner.resumable(StepKind(last.kind)):
            resume_at = last.idx
        else:
            reason = (
                f"the daemon stopped while {last.kind} was in flight (started "
                f"{utc_text(last.started_at)}); whether it took effect is unknown, so it is "
                "not run again: check the workload and close this remediation by hand"
            )
            ending = _Ending(
                status=RemediationStatus.NEEDS_HUMAN,
                reason=reason,
                failed_step=last.idx,
                step_detail=_error_detail(RuntimeError("interrupted")),
            )
            await self._end(run, ending)
            return False
        log.warning("%s: resuming at step %d", rid, resume_at)
        self._start(run.item, resume_at=resume_at)
        return True


def _cdevents(item: Remediation, status: RemediationStatus, at: datetime) -> list[dict[str, Any]]:
    """The CDEvents a real run's change to ``status`` publishes, after its own outcome
    event: an incident detected when it starts; when it succeeds, a rollback's
    ``service.rolledback``, then the incident resolved.

    A plan succeeds only after its verification steps passed (rollout, health, smoke
    test, the triggering condition cleared), so "resolved" means the service recovered;
    a failed verification ends ``needs_human`` and resolves nothing.
    """
    if status not in (RemediationStatus.RUNNING, RemediationStatus.SUCCEEDED):
        return []
    # Whatever ran had its plan loaded; never fail a journal write over an event.
    plan = item.plan() if item.decision is not None else None
    namespace = item.namespace or (plan.namespace if plan is not None else None)
    if namespace is None:
        return []  # environment.id is required: no valid CDEvent can be made
    if status is RemediationStatus.RUNNING:
        return [incident_cdevent(item, resolved=False, namespace=namespace, at=at)]
    events = []
    if item.action is ActionKind.ROLLBACK:
        events.append(
            rolledback_cdevent(
                remediation_id=item.id, service=item.service, namespace=namespace,
                to_revision=rollback_target(plan) if plan is not None else None, at=at,
            )
        )  # fmt: skip
    events.append(incident_cdevent(item, resolved=True, namespace=namespace, at=at))
    return events
