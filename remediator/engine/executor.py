"""Runs the plans the decision engine journaled, once each.

Per service one plan at a time (an in-process lane, plus a ServiceLock — a
Kubernetes Lease — so replicas never act on one service together), a global cap on
concurrent plans, and every step journaled before and after it runs. A claim is a
compare-and-set in the journal: a plan is claimed by one executor, once.

After a crash the timeline tells what was in flight. A plan whose last step
finished resumes with the next; a step that only reads or waits (rollout status,
verification) runs again; a mutating step that started but never finished ends the
plan as ``needs_human``: whether it took effect is unknown, and re-running a
mutation blindly is exactly what this daemon must never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.outcomes import outcome_event, rolledback_cdevent
from remediator.domain.plans import ActionKind, Plan, Step, StepKind
from remediator.domain.record import RemediationStatus as RecordStatus
from remediator.domain.record import stage_for
from remediator.engine.notify import notice_messages
from remediator.ports import Journal, NeedsHuman, OutboxMessage, ServiceLock, StepRunner

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def plan_of(item: Mapping[str, Any]) -> Plan:
    decision = item["decision"]
    return Plan.model_validate(decision if "steps" in decision else decision["plan"])


class Executor:
    def __init__(
        self,
        *,
        journal: Journal,
        runner: StepRunner,
        instance_id: str,
        lock: ServiceLock | None = None,
        dry_run: bool = False,
        max_concurrency: int = 4,
        step_retries: int = 3,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        outcome_channel: str | None = None,
        notice_channels: tuple[str, ...] = (),
        drain_timeout_seconds: float = 60.0,
        on_finished: Callable[[str, str], None] | None = None,
    ) -> None:
        self._journal = journal
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
        self._on_finished = on_finished

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Root task: recover what a crash left, then run plans as they are journaled."""
        await self.recover()
        try:
            while True:
                self._wake.clear()
                try:
                    await self.start_runnable()
                except TemporaryError as exc:
                    log.warning("executor paused, journal unavailable: %s", exc)
                    await self._sleep(exc.delay)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=POLL_SECONDS)
        finally:
            await self.drain()

    async def drain(self, grace_seconds: float | None = None) -> None:
        """On shutdown: every running plan finishes the step it is in, then pauses.

        A paused plan is claimed with its last step finished, so the next start resumes
        it with the following step. Only a step still running after the drain timeout
        (``grace_seconds``, else the constructor's) is cancelled; the restart then treats it as
        interrupted (needs_human if it mutates).
        """
        self._stopping = True
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
        """Start every runnable plan whose service is idle; return how many started."""
        if self._stopping:
            return 0
        started = 0
        for item in await self._journal.runnable_remediations(limit=100):
            if item["service"] in self._busy:
                continue  # its lane is taken; the next pass picks it up
            self._busy.add(item["service"])
            task = asyncio.create_task(self._execute(item), name=f"plan-{item['id']}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def run_until_idle(self) -> None:
        """Start and finish everything runnable now (tests, one-shot CLI use)."""
        while await self.start_runnable():
            await asyncio.gather(*list(self._tasks))

    # -- one plan ------------------------------------------------------------------
    async def _execute(self, item: dict[str, Any], *, resume_at: int | None = None) -> None:
        service, namespace = item["service"], item["namespace"] or ""
        try:
            async with self._slots:
                if self._lock is not None and not await self._take_lock(item):
                    return
                try:
                    await self._claimed_run(item, resume_at=resume_at)
                finally:
                    if self._lock is not None:
                        await self._lock.release(service=service, namespace=namespace)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The journal already holds what happened; the plan is left for recovery.
            log.exception("plan %s stopped unexpectedly", item["id"])
        finally:
            self._busy.discard(service)
            self.wake()

    async def _take_lock(self, item: dict[str, Any]) -> bool:
        assert self._lock is not None
        service, namespace = item["service"], item["namespace"] or ""
        try:
            if await self._lock.acquire(service=service, namespace=namespace):
                return True
        except TemporaryError as exc:
            log.warning("%s: cannot take the lock of %s yet (%s); will retry",
                        item["id"], service, exc)  # fmt: skip
            return False
        except PermanentError as exc:
            # No lock can ever be had (missing namespace, RBAC): acting without one
            # could race another replica, so the plan fails, loudly, instead of waiting.
            if await self._journal.claim_remediation(
                item["id"], by=self._instance_id, at=self._clock()
            ):
                await self._finish(
                    item, "failed", f"cannot take the lock of {service}: {exc}",
                    rehearsal=item["status"] == "dry-run" or self._dry_run,
                )  # fmt: skip
            return False
        log.info("%s: another instance holds the lock of %s; will retry", item["id"], service)
        return False

    async def _claimed_run(self, item: dict[str, Any], *, resume_at: int | None) -> None:
        rid = item["id"]
        rehearsal = item["status"] == "dry-run" or self._dry_run
        if resume_at is None:
            started = [] if rehearsal else self._messages(item, "running")
            if not await self._journal.claim_remediation(
                rid, by=self._instance_id, at=self._clock(), outbox=started
            ):
                return  # someone else claimed it first
            resume_at = 0
            log.info("%s: running %s plan for %s%s", rid, item["action"], item["service"],
                     " (dry run)" if rehearsal else "")  # fmt: skip
        plan = plan_of(item)
        context: dict[str, Any] = {}
        for idx, step in enumerate(plan.steps):
            if idx < resume_at:
                continue
            if self._stopping:
                log.warning("%s: paused before step %d (%s) for shutdown; resumes on restart",
                            rid, idx, step.kind.value)  # fmt: skip
                return
            await self._journal.step_started(rid, idx=idx, kind=step.kind.value, at=self._clock())
            try:
                detail = await self._run_step(step, service=item["service"], dry_run=rehearsal,
                                              context=context)  # fmt: skip
            except NeedsHuman as exc:
                await self._step_failed(rid, idx, exc)
                await self._finish(item, "needs_human", f"{step.kind.value}: {exc}", rehearsal)
                return
            except (PermanentError, TemporaryError) as exc:
                await self._step_failed(rid, idx, exc)
                await self._finish(item, "failed", f"{step.kind.value}: {exc}", rehearsal)
                return
            context[f"step{idx}"] = detail
            await self._journal.step_finished(
                rid, idx=idx, status="succeeded", detail=detail, at=self._clock()
            )
        await self._finish(item, "succeeded", None, rehearsal)

    async def _run_step(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
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

    async def _step_failed(self, rid: str, idx: int, exc: Exception) -> None:
        await self._journal.step_finished(
            rid, idx=idx, status="failed",
            detail={"error": str(exc), "type": type(exc).__name__}, at=self._clock(),
        )  # fmt: skip

    async def _finish(
        self, item: dict[str, Any], status: str, reason: str | None, rehearsal: bool
    ) -> None:
        if rehearsal:
            # A dry run keeps its status; its timeline shows what would have happened.
            await self._journal.finish_remediation(
                item["id"], status=None, reason=reason, at=self._clock()
            )
            log.info("%s: dry run finished (%s)%s", item["id"], status,
                     f": {reason}" if reason else "")  # fmt: skip
            return
        await self._journal.finish_remediation(
            item["id"],
            status=status,
            reason=reason,
            at=self._clock(),
            outbox=self._messages(item, status),
        )
        if self._on_finished is not None:
            self._on_finished(item["action"] or "none", status)
        level = logging.INFO if status == "succeeded" else logging.ERROR
        log.log(level, "%s: %s %s%s", item["id"], item["action"], status,
                f": {reason}" if reason else "")  # fmt: skip

    def _messages(self, item: dict[str, Any], status: str) -> list[OutboxMessage]:
        at = self._clock()
        messages = notice_messages(
            remediation_id=item["id"],
            stage=stage_for(RecordStatus(status)),
            channels=self._notice_channels,
            at=at,
        )
        if self._outcome_channel is not None:
            events = [
                outcome_event(
                    remediation_id=item["id"], status=status, service=item["service"],
                    namespace=item["namespace"], rule=item["rule"], action=item["action"],
                    reason=None, signal_id=item["signal_id"], explanation=item["explanation"],
                    at=at,
                )
            ]  # fmt: skip
            if status == "succeeded" and item["action"] == ActionKind.ROLLBACK.value:
                events.append(
                    rolledback_cdevent(
                        remediation_id=item["id"], service=item["service"],
                        namespace=item["namespace"], at=at,
                    )
                )  # fmt: skip
            messages += [
                OutboxMessage(
                    id=event["id"],
                    channel=self._outcome_channel,
                    key=item["service"],
                    payload=event,
                    created_at=at,
                )
                for event in events
            ]
        return messages

    # -- recovery --------------------------------------------------------------------
    async def recover(self) -> None:
        """Decide, for each plan a crash left claimed but unfinished, what is safe."""
        for item in await self._journal.unfinished_claims():
            rid = item["id"]
            steps = await self._journal.remediation_steps(rid)
            rehearsal = item["status"] == "dry-run" or self._dry_run
            last = steps[-1] if steps else None
            if last is None or last["status"] == "succeeded":
                resume_at = 0 if last is None else last["idx"] + 1
            elif last["status"] == "failed":
                await self._finish(item, "failed", f"{last['kind']}: {last['detail']}", rehearsal)
                continue
            elif rehearsal or self._runner.resumable(StepKind(last["kind"])):
                resume_at = last["idx"]
            else:
                reason = (
                    f"the daemon stopped while {last['kind']} was in flight (started "
                    f"{last['started_at']}); whether it took effect is unknown, so it is not "
                    "run again: check the workload and close this remediation by hand"
                )
                await self._step_failed(rid, last["idx"], RuntimeError("interrupted"))
                await self._finish(item, "needs_human", reason, rehearsal)
                continue
            log.warning("%s: resuming after a restart at step %d", rid, resume_at)
            self._busy.add(item["service"])
            task = asyncio.create_task(self._execute(item, resume_at=resume_at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
