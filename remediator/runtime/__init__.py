"""Builds everything from Settings, supervises the root tasks, drains on SIGTERM.

Shutdown order, all within ``shutdown.timeout_seconds``: webhooks answer 503 and
/readyz fails at once; the Kafka consumer commits and leaves its group; running
plans finish their current step and pause; in-flight requests finish; queued
outcome events and notices are flushed; then an AsyncExitStack closes the listener,
the clients and, last, the journal. Every request answered 200 was journaled before
its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from remediator.connectors.email import EmailNotifier
from remediator.connectors.helm import Helm
from remediator.connectors.kafka import KafkaOutboxMetrics, KafkaPublisher
from remediator.connectors.kubernetes.client import KubeClient, Ref, connect
from remediator.connectors.kubernetes.errors import KubeNotFound
from remediator.connectors.kubernetes.jobrunner import job_runner_factory, secret_source
from remediator.connectors.kubernetes.scale import KubernetesFacts
from remediator.connectors.kubernetes.steps import KubernetesStepRunner, LeaseLock
from remediator.connectors.postgres import ServiceLocks
from remediator.connectors.postgres.steps import KINDS as DATABASE_STEPS
from remediator.connectors.postgres.steps import PostgresStepRunner
from remediator.connectors.prometheus import Prometheus
from remediator.connectors.slack import SlackNotifier
from remediator.domain.errors import ConfigError, PermanentError, TemporaryError
from remediator.domain.notices import EmailRouting, SlackRouting
from remediator.domain.plans import Decision, NoActionReason, Plan, Step, StepKind
from remediator.domain.rules import RulePack
from remediator.domain.rules.events import known_event_types
from remediator.domain.signals import Source
from remediator.engine.approvals import ApprovalTimer
from remediator.engine.decider import DecisionEngine, UnknownFacts
from remediator.engine.executor import Executor
from remediator.engine.gauges import JournalGauges, JournalState
from remediator.engine.notify import NotificationRelay
from remediator.engine.outbox import OutboxRelay
from remediator.ingress.auth import Authenticator, principals_summary
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.ingress.kafka import KafkaIntake, KafkaIntakeMetrics
from remediator.ingress.services import ServicesView
from remediator.ingress.slack import PATH as SLACK_PATH
from remediator.journal import journal_from_url
from remediator.metrics import Metrics
from remediator.ports import Journal, ServiceFacts, StepRunner
from remediator.rulefiles import load_rule_pack_and_origin
from remediator.runtime.listener import (
    approvers_by_role,
    auth_from_settings,
    check_bind_is_safe,
    failed_auth_limiter,
    server_ssl_context,
)
from remediator.runtime.looplag import LoopLagProbe
from remediator.runtime.retention import RetentionTask
from remediator.runtime.supervision import (
    Closing,
    ShutdownBudget,
    beat_forever,
    flush_until_empty,
    keep_running,
)
from remediator.settings import Settings, is_loopback

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600.0
# The cyclic collector's thresholds while serving (CPython's default: 700, 10, 10). An
# alert storm allocates millions of short-lived, acyclic objects (freed by reference
# counting anyway); at the default each 700 of them start a collection and every few a
# full one, 38-52 pauses over 2 ms per 10,000-alert storm, up to 54 ms, all of them
# collecting nothing. At these, one or two (docs/benchmarks.md).
GC_THRESHOLDS = (50_000, 20, 100)
CANCEL_RETRY_SECONDS = 0.5


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        journal: Journal | None = None,
        pack: RulePack | None = None,
        facts: ServiceFacts | None = None,
    ) -> None:
        self.settings = settings
        # Parsed once: a counted failpoint fires that many times in the whole process.
        self.failpoints = settings.armed_failpoints
        self.journal = journal or journal_from_url(
            settings.journal.url,
            max_batch=settings.journal.max_batch,
            call_timeout_seconds=settings.journal.call_timeout_seconds,
            prune_batch_size=settings.journal.prune_batch_size,
            pool_size=settings.journal.pool_size,
            # The name claims and heartbeats carry: the executor's, so replicas tell
            # a live holder's claims from a gone one's.
            instance=settings.kubernetes.instance_id,
            failpoints=self.failpoints,
        )
        # Rule problems are start-up errors: refuse to run on rules nobody can trust.
        # The origin is what automation level changes are recorded as made by.
        if pack is None:
            self.pack, self.rules_origin = load_rule_pack_and_origin(settings.rules_path)
        else:
            self.pack, self.rules_origin = pack, "rule pack given to the runtime"
        self.facts: ServiceFacts | None = facts
        self.kube_status = "not connected"
        self.metrics = Metrics()
        self.state = IntakeState()
        self.stopping = asyncio.Event()
        self.bound_port: int | None = None

    def request_stop(self) -> None:
        """Signal handlers only set flags; the supervisor does the work."""
        self.state.draining = True  # webhooks answer 503 from this instant
        self.stopping.set()

    async def run(self) -> int:
        settings = self.settings
        check_bind_is_safe(settings)
        # Credentials and certificates are start-up errors, before anything is opened.
        auth = auth_from_settings(settings)
        tls = server_ssl_context(settings.http)
        if self.failpoints.armed:
            log.warning("failpoints armed (testing only, never in production): %s",
                        ", ".join(self.failpoints.armed))  # fmt: skip
        self._log_auth(auth, tls)
        async with contextlib.AsyncExitStack() as stack:
            # Every close runs, in reverse order of start, even when one raises: the
            # journal, opened first, closes last.
            closing = Closing(stack)
            await self.journal.open()
            closing.add("journal", self.journal.close)
            await self._record_automation_levels()
            # What start-up built (rules, settings, modules) lives as long as the process:
            # moved out of the collector's view, so a full collection in an alert storm
            # walks only what the storm allocated.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            await self._serve(closing, auth=auth, tls=tls)
        return 0

    async def _record_automation_levels(self) -> None:
        """Journal each service whose automation level differs from the last one recorded.

        Before anything is decided: a daemon that cannot record the levels it is about
        to act on does not start (as with rules it cannot load)."""
        levels = {name: self.pack.automation(name) for name in self.pack.services}
        changes = await self.journal.record_automation_levels(
            levels, by=self.rules_origin, at=datetime.now(UTC)
        )
        for change in changes:
            if change.previous is None:
                log.info("automation level of %s: %s (first recorded; %s)", change.service,
                         change.level.value, change.changed_by)  # fmt: skip
            else:
                log.warning("automation level of %s changed: %s -> %s (%s)", change.service,
                            change.previous.value, change.level.value,
                            change.changed_by)  # fmt: skip

    def _log_auth(self, auth: Authenticator, tls: ssl.SSLContext | None) -> None:
        settings = self.settings
        if not auth.enabled:
            log.warning("no credential configured: anyone reaching %s may post alerts, read, "
                        "approve and reset the circuit breaker", settings.http.listen)  # fmt: skip
        else:
            log.info("principals: %s", principals_summary(auth.principals))
            if settings.auth.principals_file is None:
                log.warning("no auth.principals_file: the webhook credential may only post "
                            "alerts; reading and approving over the API need principals "
                            "(docs/security.md)")  # fmt: skip
        if tls is None and not is_loopback(settings.http.host):
            log.warning("no TLS (http.tls_cert_file): credentials cross the network to %s "
                        "in clear unless something in front adds TLS",
                        settings.http.listen)  # fmt: skip

    async def _serve(
        self, closing: Closing, *, auth: Authenticator, tls: ssl.SSLContext | None
    ) -> None:
        settings = self.settings
        relay, slack, closers = self._notification_relay()
        for name, close in closers:
            closing.add(name, close)
        kube = await self._connect_kube()
        if kube is not None:
            closing.add("kubernetes client", kube.close)
        outbox_metrics = KafkaOutboxMetrics(self.metrics.registry)
        publisher = (
            KafkaPublisher(settings=settings.kafka, metrics=outbox_metrics)
            if settings.kafka.enabled
            else None
        )
        if publisher is not None:
            closing.add("kafka producer", publisher.close)
        notice_channels = relay.channels if relay else ()
        outcome_channel = publisher.channel if publisher else None
        step_runner = self._step_runner(kube)
        executor = self._executor(step_runner, kube, notice_channels, outcome_channel)
        facts = self.facts or (
            KubernetesFacts(
                kube, deployments={n: s.workload for n, s in self.pack.services.items()}
            )
            if kube is not None
            else UnknownFacts()
        )
        engine = DecisionEngine(
            journal=self.journal,
            pack=self.pack,
            facts=facts,
            # Without a cluster nothing can be carried out: record what would be done.
            dry_run=settings.dry_run or executor is None,
            notice_channels=notice_channels,
            outcome_channel=outcome_channel,
            on_decision=self._decided(executor),
            on_decision_latency=self.metrics.decision_latency.observe,
            on_deploy=step_runner.after_deploy if step_runner is not None else None,
            on_internal_error=lambda _kind: self.metrics.internal_errors.labels(
                component="decider"
            ).inc(),
            on_facts_error=lambda service: self.metrics.facts_errors.labels(service=service).inc(),
            failpoints=self.failpoints,
            approvals=settings.approvals.config(),
        )
        approval_clock = ApprovalTimer(
            journal=self.journal,
            interval_seconds=settings.approvals.check_interval_seconds,
            notice_channels=notice_channels,
            outcome_channel=outcome_channel,
            approvers_by_role=approvers_by_role(auth.principals),
            on_escalated=self.metrics.approvals_escalated.inc,
            on_expired=self.metrics.approvals_expired.inc,
            on_internal_error=lambda _kind: self.metrics.internal_errors.labels(
                component="approval-clock"
            ).inc(),
        )
        retention = RetentionTask(
            journal=self.journal,
            pack=self.pack,
            backup_root=settings.database.backup_root,
            backup_policy=settings.retention.backup_policy(),
            snapshot_policy=settings.retention.snapshot_policy(),
            snapshots=step_runner,
            interval_seconds=settings.retention.interval_seconds,
            dry_run=settings.dry_run,
            clock=lambda: datetime.now(UTC),
        )
        gauges = JournalGauges(
            journal=self.journal,
            on_state=self._journal_state,
            # As often as the approval clock looks: the waiting plans' gauge keeps up
            # with what it escalates and expires.
            interval_seconds=settings.approvals.check_interval_seconds,
            on_internal_error=lambda _kind: self.metrics.internal_errors.labels(
                component="journal-gauges"
            ).inc(),
            clock=lambda: datetime.now(UTC),
        )
        roots: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "decision-engine": engine.run,
            "approval-clock": approval_clock.run,
            "journal-gauges": gauges.run,
            "journal-pruner": self._prune_forever,
            "journal-heartbeat": self._beat_forever,
            "retention": retention.run,
            "event-loop-lag": LoopLagProbe(observe=self.metrics.event_loop_lag.observe).run,
        }
        if executor is not None:
            roots["executor"] = executor.run
        if relay is not None:
            roots["notification-relay"] = relay.run
        kafka_intake: KafkaIntake | None = None
        outbox: OutboxRelay | None = None
        if publisher is not None:
            kafka_intake = KafkaIntake(
                settings=settings.kafka,
                journal=self.journal,
                on_new_signals=engine.journaled,
                metrics=KafkaIntakeMetrics(
                    self.metrics.registry,
                    internal_errors=self.metrics.internal_errors,
                    journal_latency=self.metrics.journal_latency,
                    known_types=known_event_types(
                        kind
                        for rule in self.pack.rules
                        if rule.match.source is Source.KAFKA
                        for kind in rule.match.kinds
                    ),
                ),
                limits=settings.limits.input_limits(),
            )
            outbox = OutboxRelay(
                journal=self.journal,
                publisher=publisher,
                holder=settings.kubernetes.instance_id,
                observer=outbox_metrics,
            )
            roots["kafka-intake"] = kafka_intake.run
            roots["outbox-relay"] = outbox.run
        intake = IntakeApp(
            journal=self.journal,
            metrics=self.metrics,
            auth=auth,
            failed_auth=failed_auth_limiter(settings),
            state=self.state,
            service_labels=settings.signals.service_labels,
            namespace_labels=settings.signals.namespace_labels,
            body_limit_bytes=settings.http.body_limit_bytes,
            retry_after_seconds=settings.http.retry_after_seconds,
            on_new_signals=engine.journaled,
            readiness_details=lambda: {"kubernetes": self.kube_status},
            on_approved=executor.wake if executor is not None else None,
            input_limits=settings.limits.input_limits(),
            response_bytes=settings.limits.response_bytes,
            metrics_need_read=settings.auth.metrics_need_read,
            pack=self.pack,
            notice_channels=notice_channels,
            outcome_channel=outcome_channel,
            services=ServicesView(journal=self.journal, pack=self.pack),
            slack_signing_secret=settings.slack.signing_secret if slack is not None else None,
            slack_team_id=settings.slack.team_id,
            slack_replies=slack,
        )
        runner = web.AppRunner(
            intake.build(),
            access_log=None,
            # In-flight requests were already waited for (within the shutdown budget).
            shutdown_timeout=1.0,
            handle_signals=False,
        )
        await runner.setup()
        closing.add("http listener", runner.cleanup)
        site = web.TCPSite(
            runner, settings.http.host, settings.http.port, backlog=1024, ssl_context=tls
        )
        await site.start()
        self.bound_port = _bound_port(runner, settings.http.port)
        self._install_signal_handlers()
        self._log_started(executor, relay, publisher, scheme="https" if tls else "http")
        if settings.slack.interactive and not auth.slack_users:
            log.warning("slack: buttons are on but no principal lists slack_users: every "
                        "click will be refused (docs/security.md#slack-buttons)")  # fmt: skip
        tasks = {
            asyncio.create_task(
                keep_running(name, fn, on_crash=self._root_crashed), name=name
            ): name
            for name, fn in roots.items()
        }
        try:
            await self._until_stop_requested()
            drain = ShutdownBudget(settings.shutdown.timeout_seconds)
            closing.budget = drain
            await self._shutdown(tasks, drain, kafka_intake=kafka_intake, executor=executor,
                                 outbox=outbox, relay=relay)  # fmt: skip
        finally:
            for task in tasks:  # anything the sequence did not stop (none expected)
                task.cancel()
            if tasks:  # bounded: a task that ignores cancellation must not hold the exit
                await asyncio.wait(tasks, timeout=CANCEL_RETRY_SECONDS)

    def _log_started(
        self,
        executor: Executor | None,
        relay: NotificationRelay | None,
        publisher: KafkaPublisher | None,
        *,
        scheme: str,
    ) -> None:
        settings = self.settings
        log.info(
            "remediator listening on %s://%s:%d (journal %s, rules %s: %d services, "
            "%d rules, dry_run=%s)",
            scheme, settings.http.host, self.bound_port, settings.journal.shown_url,
            settings.rules_path, len(self.pack.services), len(self.pack.rules), settings.dry_run,
        )  # fmt: skip
        if executor is None:
            log.warning(
                "kubernetes %s: nothing is changed; "
                "replica counts are unknown, so scale-ups are skipped as not_applicable",
                self.kube_status,
            )
        else:
            log.info("kubernetes: %s; acting as %s", self.kube_status,
                     settings.kubernetes.instance_id)  # fmt: skip
        log.info(
            "notifications: %s", ", ".join(relay.channels) if relay else "off (no Slack "
            "token, no SMTP host)"
        )  # fmt: skip
        if settings.slack.interactive:
            log.info("slack: Approve and Reject buttons on plans awaiting approval; clicks "
                     "taken at %s (signed with the signing secret)%s", SLACK_PATH,
                     f", from workspace {settings.slack.team_id} only"
                     if settings.slack.team_id else "")  # fmt: skip
        if publisher is not None:
            log.info("kafka: consuming %s as group %s from %s; outcome events to %s",
                     ",".join(settings.kafka.deploy_topics), settings.kafka.group_id,
                     ",".join(settings.kafka.bootstrap_servers), publisher.topic)  # fmt: skip
        else:
            log.info("kafka: not configured (no --kafka-bootstrap): webhook-only")

    def _decided(self, executor: Executor | None) -> Callable[[Decision], None]:
        # The labelled counters, looked up once each: a storm counts thousands a second.
        counters: dict[NoActionReason | None, Counter] = {}

        def counter(reason: NoActionReason | None) -> Counter:
            found = counters.get(reason)
            if found is None:
                found = counters[reason] = self.metrics.decisions.labels(
                    outcome="plan" if reason is None else "no_action",
                    reason="" if reason is None else reason.value,
                )
            return found

        def on_decision(decision: Decision) -> None:
            if isinstance(decision, Plan):
                counter(None).inc()
                if executor is not None:
                    executor.wake()
            else:
                counter(decision.reason).inc()
                if executor is not None and decision.reason is NoActionReason.DRY_RUN:
                    executor.wake()  # dry runs are rehearsed too

        return on_decision

    async def _connect_kube(self) -> KubeClient | None:
        """A client when the cluster answers; else None, with the reason in kube_status."""
        k = self.settings.kubernetes
        try:
            kube = await connect(kubeconfig=k.kubeconfig, context=k.context)
        except ConfigError as exc:
            self.kube_status = f"unreachable ({exc}); plans are recorded as dry runs"
            return None
        first = next(iter(self.pack.services.values()), None)
        if first is not None:
            ref = Ref("Deployment", first.namespace, first.workload)
            try:
                # A read the documented Role grants (docs/rbac.md): reachable, authorised.
                await kube.get(ref)
            except KubeNotFound:
                log.warning("kubernetes: %s of the catalog does not exist (yet)", ref)
            except (TemporaryError, PermanentError) as exc:
                await kube.close()
                self.kube_status = f"unreachable ({exc}); plans are recorded as dry runs"
                return None
        self.kube_status = "connected"
        return kube

    def _step_runner(self, kube: KubeClient | None) -> KubernetesStepRunner | None:
        if kube is None:
            return None
        k = self.settings.kubernetes
        return KubernetesStepRunner(
            kube=kube,
            pack=self.pack,
            helm=Helm(binary=Path(k.helm_binary), kubeconfig=k.kubeconfig, kube_context=k.context),
            prometheus=self._prometheus(),
            rollout_timeout_seconds=k.rollout_timeout_seconds,
            health_timeout_seconds=k.health_timeout_seconds,
            health_grace_seconds=k.health_grace_seconds,
        )

    def _prometheus(self) -> Prometheus | None:
        p = self.settings.prometheus
        if p.url is None:
            return None
        return Prometheus(base_url=p.url, timeout_seconds=p.timeout_seconds,
                          poll_seconds=p.poll_seconds)  # fmt: skip

    def _executor(
        self,
        runner: KubernetesStepRunner | None,
        kube: KubeClient | None,
        notice_channels: tuple[str, ...],
        outcome_channel: str | None,
    ) -> Executor | None:
        if runner is None or kube is None:
            return None
        k = self.settings.kubernetes
        database = PostgresStepRunner(
            pack=self.pack,
            backup_root=self.settings.database.backup_root,
            # One per daemon, shared by every plan; the PostgreSQL advisory lock covers
            # other replicas and the `db` CLI.
            locks=ServiceLocks(),
            clock=lambda: datetime.now(UTC),
            secret_source=secret_source(kube.api),
            job_runners=job_runner_factory(kube.api),
        )
        return Executor(
            journal=self.journal,
            runner=RoutedStepRunner(default=runner, database=database),
            instance_id=k.instance_id,
            lock=LeaseLock(
                kube=kube, holder=k.instance_id, duration_seconds=k.lease_duration_seconds
            ),
            dry_run=self.settings.dry_run,
            max_concurrency=k.max_concurrent_plans,
            # Used only if the executor is cancelled outside the shutdown sequence.
            drain_timeout_seconds=self.settings.shutdown.timeout_seconds,
            lock_retry_base_seconds=k.lock_retry_base_seconds,
            lock_retry_max_seconds=k.lock_retry_max_seconds,
            claim_stale_seconds=self.settings.journal.claim_stale_seconds,
            recovery_interval_seconds=self.settings.journal.recovery_interval_seconds,
            failpoints=self.failpoints,
            on_finished=lambda action, status: self.metrics.remediations_finished.labels(
                action=action, status=status
            ).inc(),
            on_lock_attempt=lambda result: self.metrics.lock_attempts.labels(result=result).inc(),
            on_lease_lost=lambda _service: self.metrics.lease_lost.inc(),
            on_internal_error=lambda component: self.metrics.internal_errors.labels(
                component=component
            ).inc(),
            on_first_action=self.metrics.action_latency.observe,
            on_verified=self.metrics.verification_latency.observe,
            on_run_duration=lambda status, seconds: self.metrics.remediation_duration.labels(
                status=status
            ).observe(seconds),
            outcome_channel=outcome_channel,
            notice_channels=notice_channels,
        )

    def _notification_relay(
        self,
    ) -> tuple[
        NotificationRelay | None,
        SlackNotifier | None,
        list[tuple[str, Callable[[], Awaitable[None]]]],
    ]:
        """The relay, the Slack client (it also answers clicks), and what closes them."""
        slack_settings, email_settings = self.settings.slack, self.settings.email
        if not slack_settings.enabled and not email_settings.enabled:
            return None, None, []
        closers: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        slack = email = None
        slack_routes = email_routes = None
        if slack_settings.enabled:
            assert slack_settings.token is not None and slack_settings.default_channel
            slack = SlackNotifier(
                token=slack_settings.token.get_secret_value(), base_url=slack_settings.base_url
            )
            closers.append(("slack client", slack.close))
            slack_routes = SlackRouting(
                default=slack_settings.default_channel,
                by_service=slack_settings.channels_by_service,
                by_severity=slack_settings.channels_by_severity,
            )
        if email_settings.enabled:
            assert email_settings.smtp_host is not None
            email = EmailNotifier(
                host=email_settings.smtp_host,
                port=email_settings.smtp_port,
                security=email_settings.security,
                username=email_settings.username,
                password=email_settings.password,
                sender=email_settings.sender,
            )
            email_routes = EmailRouting(
                default=email_settings.recipients,
                by_service=email_settings.recipients_by_service,
                by_severity=email_settings.recipients_by_severity,
            )
        public = self.settings.http.public_url

        def record_url(rid: str) -> str | None:
            return (
                f"{public.rstrip('/')}/api/v1/remediations/{rid}/record?format=html"
                if public
                else None
            )

        relay = NotificationRelay(
            journal=self.journal,
            holder=self.settings.kubernetes.instance_id,
            slack=slack,
            slack_routes=slack_routes,
            email=email,
            email_routes=email_routes,
            record_url=record_url,
            on_internal_error=lambda _kind: self.metrics.internal_errors.labels(
                component="notifier"
            ).inc(),
            escalation_channel=self.settings.approvals.escalation_channel,
            approval_buttons=slack_settings.interactive,
            on_delivery=lambda channel, result: self.metrics.notifications.labels(
                channel=channel, result=result.value
            ).inc(),
        )
        return relay, slack, closers

    def _journal_state(self, state: JournalState) -> None:
        self.metrics.approvals_waiting.set(state.approvals_waiting)
        self.metrics.circuit_open.set(1 if state.circuit_open else 0)
        self.metrics.undecided_signals.set(state.undecided_signals)
        self.metrics.undecided_age.set(state.undecided_seconds)

    def _root_crashed(self, name: str) -> None:
        self.metrics.internal_errors.labels(component=name).inc()
        self.metrics.root_task_restarts.labels(task=name).inc()

    async def _until_stop_requested(self) -> None:
        """Root tasks never end on their own (keep_running restarts them): wait for a stop."""
        await self.stopping.wait()
        self.state.draining = True
        log.info("stop requested: draining within %.0fs", self.settings.shutdown.timeout_seconds)

    async def _shutdown(
        self,
        tasks: dict[asyncio.Task[Any], str],
        budget: ShutdownBudget,
        *,
        kafka_intake: KafkaIntake | None,
        executor: Executor | None,
        outbox: OutboxRelay | None,
        relay: NotificationRelay | None,
    ) -> None:
        """The documented order, all within one budget: webhooks already answer 503;
        Kafka commits and leaves the group; running plans finish their step and pause;
        in-flight requests finish; queued outcome events and notices are flushed. The
        exit stack then closes the listener, the clients and, last, the journal.
        """
        by_name = {name: task for task, name in tasks.items()}

        async def stop(*names: str) -> None:
            chosen = [by_name[n] for n in names if n in by_name]
            # Cancel again while any is still running: a library may swallow one
            # cancellation (Python 3.11's wait_for does when its inner await just ended).
            while pending := [task for task in chosen if not task.done()]:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=CANCEL_RETRY_SECONDS)
                if budget.remaining() <= 0 and any(not task.done() for task in pending):
                    log.warning("shutdown: %s would not stop within the budget; moving on",
                                ", ".join(names))  # fmt: skip
                    return

        await stop("kafka-intake")
        if kafka_intake is not None:
            await budget.run("kafka consumer commit and leave", kafka_intake.close())
        await stop(
            "decision-engine",
            "approval-clock",
            "journal-pruner",
            "retention",
            "journal-gauges",
            "event-loop-lag",
        )
        if executor is not None:
            # The rest of the sequence keeps its reserve; plans get everything else.
            # drain() cancels what is still running at its own timeout; the phase's
            # timeout is only a backstop, so it may use the reserve.
            await budget.run(
                "running plans",
                executor.drain(grace_seconds=budget.remaining(reserve=True)),
                may_use_reserve=True,
            )
            await stop("executor")
        # Beating until no plan of this instance runs any more: its claims stay its own.
        await stop("journal-heartbeat")
        await budget.run("in-flight requests", self.state.wait_idle(), may_use_reserve=True)
        if self.state.in_flight:
            log.warning("%d request(s) still in flight; closing anyway", self.state.in_flight)
        await stop("outbox-relay", "notification-relay")
        if outbox is not None:
            await budget.run(
                "outbox flush", flush_until_empty(outbox.run_once), may_use_reserve=True
            )
        if relay is not None:
            for channel in relay.channels:
                await budget.run(
                    f"{channel} notices flush",
                    flush_until_empty(functools.partial(relay.deliver_pending, channel)),
                    may_use_reserve=True,
                )
        log.info("drained in %.1fs of %.0fs", budget.elapsed(), budget.total)

    async def _beat_forever(self) -> None:
        await beat_forever(self.journal, interval_seconds=self.settings.journal.heartbeat_seconds)

    async def _prune_forever(self) -> None:
        retention = self.settings.journal.retention_hours * 3600
        while True:
            try:
                deleted = await self.journal.prune(older_than_seconds=retention)
            except (TemporaryError, PermanentError) as exc:
                log.warning("journal prune failed, will retry in %.0fs: %s",
                            PRUNE_INTERVAL_SECONDS, exc)  # fmt: skip
            else:
                self.metrics.pruned_signals.inc(deleted)
                if deleted:
                    log.info("pruned %d signal(s) older than %.0fh, and their decisions",
                             deleted, retention / 3600)  # fmt: skip
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)


class RoutedStepRunner:
    """Database steps (backup, revert) to the PostgreSQL runner; the rest to Kubernetes."""

    def __init__(self, *, default: StepRunner, database: StepRunner) -> None:
        self._default = default
        self._database = database

    def _for(self, kind: StepKind) -> StepRunner:
        return self._database if kind in DATABASE_STEPS else self._default

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._for(step.kind).run(
            step, service=service, dry_run=dry_run, context=context
        )

    def resumable(self, kind: StepKind) -> bool:
        return self._for(kind).resumable(kind)


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured


__all__ = [
    "Closing",
    "Runtime",
    "ShutdownBudget",
    "approvers_by_role",
    "auth_from_settings",
    "check_bind_is_safe",
    "keep_running",
    "server_ssl_context",
]
