"""Builds everything from Settings, supervises the root tasks, drains on SIGTERM.

Drain order: stop intake (webhooks answer 503, /readyz fails), let in-flight
requests finish within ``http.drain_timeout_seconds``, close the listener, close
the journal. Every request answered 200 was journaled before its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from remediator.connectors.email import EmailNotifier
from remediator.connectors.helm import Helm
from remediator.connectors.kafka import KafkaOutboxMetrics, KafkaPublisher
from remediator.connectors.kubernetes.client import KubeClient, Ref, connect
from remediator.connectors.kubernetes.jobrunner import job_runner_factory, secret_source
from remediator.connectors.kubernetes.scale import KubernetesFacts
from remediator.connectors.kubernetes.steps import KubernetesStepRunner, LeaseLock
from remediator.connectors.postgres import ServiceLocks
from remediator.connectors.postgres.steps import KINDS as DATABASE_STEPS
from remediator.connectors.postgres.steps import PostgresStepRunner
from remediator.connectors.slack import SlackNotifier
from remediator.domain.errors import ConfigError, PermanentError, TemporaryError
from remediator.domain.notices import EmailRouting, SlackRouting
from remediator.domain.plans import Decision, NoActionReason, Plan, Step, StepKind
from remediator.domain.rules import RulePack
from remediator.engine.decider import DecisionEngine, UnknownFacts
from remediator.engine.executor import Executor
from remediator.engine.notify import NotificationRelay
from remediator.engine.outbox import OutboxRelay
from remediator.ingress.http import AuthConfig, IntakeApp, IntakeState
from remediator.ingress.kafka import KafkaIntake, KafkaIntakeMetrics
from remediator.journal import journal_from_url
from remediator.metrics import Metrics
from remediator.ports import Journal, ServiceFacts, StepRunner
from remediator.rulefiles import load_rule_pack_from_path
from remediator.settings import Settings, is_loopback

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600.0


def auth_from_settings(settings: Settings) -> AuthConfig:
    return AuthConfig(
        bearer_token=settings.webhook_token.get_secret_value() if settings.webhook_token else None,
        basic_user=settings.webhook_username,
        basic_password=(
            settings.webhook_password.get_secret_value() if settings.webhook_password else None
        ),
    )


def check_bind_is_safe(settings: Settings) -> None:
    """Without credentials anyone who reaches the port could trigger rollbacks."""
    host = settings.http.host
    if settings.auth_configured or is_loopback(host) or settings.http.insecure_no_auth:
        return
    raise ConfigError(
        f"refusing to listen on {settings.http.listen} without credentials: set "
        "REMEDIATOR_WEBHOOK_TOKEN (or REMEDIATOR_WEBHOOK_TOKEN_FILE, or basic auth), "
        "listen on 127.0.0.1, or pass --insecure-no-auth"
    )


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
        self.journal = journal or journal_from_url(
            settings.journal.url,
            max_batch=settings.journal.max_batch,
            call_timeout_seconds=settings.journal.call_timeout_seconds,
            prune_batch_size=settings.journal.prune_batch_size,
        )
        # Rule problems are start-up errors: refuse to run on rules nobody can trust.
        self.pack = pack or load_rule_pack_from_path(settings.rules_path)
        self.facts: ServiceFacts | None = facts
        self.kube_status = "not connected"
        self.metrics = Metrics()
        self.state = IntakeState()
        self.stopping = asyncio.Event()
        self.bound_port: int | None = None

    def request_stop(self) -> None:
        """Signal handlers only set this flag; the supervisor does the work."""
        self.stopping.set()

    async def run(self) -> int:
        settings = self.settings
        check_bind_is_safe(settings)
        if not settings.auth_configured:
            log.warning("no webhook credential configured: anyone reaching %s may post alerts",
                        settings.http.listen)  # fmt: skip
        await self.journal.open()
        relay, closers = self._notification_relay()
        kube = await self._connect_kube()
        if kube is not None:
            closers.append(kube.close)
        outbox_metrics = KafkaOutboxMetrics(self.metrics.registry)
        publisher = (
            KafkaPublisher(settings=settings.kafka, metrics=outbox_metrics)
            if settings.kafka.enabled
            else None
        )
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
            on_deploy=step_runner.snapshot_for_deploy if step_runner is not None else None,
        )
        roots: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "decision-engine": engine.run,
            "journal-pruner": self._prune_forever,
        }
        if executor is not None:
            roots["executor"] = executor.run
        if relay is not None:
            roots["notification-relay"] = relay.run
        kafka_intake: KafkaIntake | None = None
        if publisher is not None:
            kafka_intake = KafkaIntake(
                settings=settings.kafka,
                journal=self.journal,
                on_new_signals=engine.wake,
                metrics=KafkaIntakeMetrics(self.metrics.registry),
            )
            outbox = OutboxRelay(journal=self.journal, publisher=publisher, observer=outbox_metrics)
            roots["kafka-intake"] = kafka_intake.run
            roots["outbox-relay"] = outbox.run
        intake = IntakeApp(
            journal=self.journal,
            metrics=self.metrics,
            auth=auth_from_settings(settings),
            state=self.state,
            service_labels=settings.signals.service_labels,
            namespace_labels=settings.signals.namespace_labels,
            body_limit_bytes=settings.http.body_limit_bytes,
            retry_after_seconds=settings.http.retry_after_seconds,
            on_new_signals=engine.wake,
            readiness_details=lambda: {"kubernetes": self.kube_status},
            on_approved=executor.wake if executor is not None else None,
        )
        runner = web.AppRunner(
            intake.build(),
            access_log=None,
            shutdown_timeout=settings.http.drain_timeout_seconds,
            handle_signals=False,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.http.host, settings.http.port, backlog=1024)
            await site.start()
            self.bound_port = _bound_port(runner, settings.http.port)
            self._install_signal_handlers()
            log.info(
                "remediator listening on http://%s:%d (journal %s, rules %s: %d services, "
                "%d rules, dry_run=%s)",
                settings.http.host, self.bound_port, settings.journal.url, settings.rules_path,
                len(self.pack.services), len(self.pack.rules), settings.dry_run,
            )  # fmt: skip
            if executor is None:
                log.warning(
                    "kubernetes %s: plans are recorded as dry runs and nothing is changed; "
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
            if publisher is not None:
                log.info("kafka: consuming %s as group %s from %s; outcome events to %s",
                         ",".join(settings.kafka.deploy_topics), settings.kafka.group_id,
                         ",".join(settings.kafka.bootstrap_servers), publisher.topic)  # fmt: skip
            else:
                log.info("kafka: not configured (no --kafka-bootstrap): webhook-only")
            exit_code = await self._supervise(roots)
        finally:
            self.state.draining = True  # webhooks answer 503 from now on
            # Kafka first: the batch in flight still needs the journal; its offsets are
            # committed and the group left before the journal closes.
            if kafka_intake is not None:
                await kafka_intake.close()
            if publisher is not None:
                await publisher.close()
            await self._drain(runner)
            for close in closers:
                await close()
        return exit_code

    def _decided(self, executor: Executor | None) -> Callable[[Decision], None]:
        def on_decision(decision: Decision) -> None:
            if isinstance(decision, Plan):
                self.metrics.decisions.labels(outcome="plan", reason="").inc()
                if executor is not None:
                    executor.wake()
            else:
                self.metrics.decisions.labels(
                    outcome="no_action", reason=decision.reason.value
                ).inc()
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
        namespace = next((s.namespace for s in self.pack.services.values()), "default")
        try:
            # Also proves the RBAC the executor needs most (see docs/rbac.md).
            await kube.list_all(Ref("Deployment", namespace))
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
            rollout_timeout_seconds=k.rollout_timeout_seconds,
            health_timeout_seconds=k.health_timeout_seconds,
        )

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
            drain_timeout_seconds=k.drain_timeout_seconds,
            on_finished=lambda action, status: self.metrics.remediations_finished.labels(
                action=action, status=status
            ).inc(),
            outcome_channel=outcome_channel,
            notice_channels=notice_channels,
        )

    def _notification_relay(
        self,
    ) -> tuple[NotificationRelay | None, list[Callable[[], Coroutine[Any, Any, None]]]]:
        slack_settings, email_settings = self.settings.slack, self.settings.email
        if not slack_settings.enabled and not email_settings.enabled:
            return None, []
        closers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        slack = email = None
        slack_routes = email_routes = None
        if slack_settings.enabled:
            assert slack_settings.token is not None and slack_settings.default_channel
            slack = SlackNotifier(
                token=slack_settings.token.get_secret_value(), base_url=slack_settings.base_url
            )
            closers.append(slack.close)
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
            slack=slack,
            slack_routes=slack_routes,
            email=email,
            email_routes=email_routes,
            record_url=record_url,
        )
        return relay, closers

    async def _supervise(self, roots: dict[str, Callable[[], Coroutine[Any, Any, None]]]) -> int:
        tasks: dict[asyncio.Task[Any], str] = {
            asyncio.create_task(fn(), name=name): name for name, fn in roots.items()
        }
        stop_wait: asyncio.Task[Any] = asyncio.create_task(self.stopping.wait(), name="stop-signal")
        exit_code = 0
        try:
            done, _ = await asyncio.wait({*tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is stop_wait:
                    log.info("stop requested: draining")
                    continue
                exc = task.exception()
                log.error("root task %s ended unexpectedly: %r; shutting down", tasks[task], exc)
                exit_code = 1
        finally:
            for task in [*tasks, stop_wait]:
                task.cancel()
            await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
        return exit_code

    async def _drain(self, runner: web.AppRunner) -> None:
        self.state.draining = True
        timeout = self.settings.http.drain_timeout_seconds
        try:
            await asyncio.wait_for(self.state.wait_idle(), timeout=timeout)
        except TimeoutError:
            log.warning("%d request(s) still in flight after %.0fs; closing anyway",
                        self.state.in_flight, timeout)  # fmt: skip
        await runner.cleanup()
        await self.journal.close()
        log.info("drained and stopped")

    async def _prune_forever(self) -> None:
        retention = self.settings.journal.retention_hours * 3600
        while True:
            try:
                deleted = await self.journal.prune(older_than_seconds=retention)
            except TemporaryError as exc:
                log.warning("journal prune failed, will retry: %s", exc)
            else:
                if deleted:
                    log.info("pruned %d signal(s) older than %.0fh", deleted, retention / 3600)
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
