"""Apache Kafka from Maven Central jars: one KRaft node that is broker and controller.

Build: a generated pom naming ``org.apache.kafka:kafka_2.13`` plus the Log4j2/SLF4J
bridge (without it Kafka 4 logs nothing), resolved by maven-dependency-plugin into
``cache_root()/kafka-<version>/libs``. Maven's local repository is kept in the cache
too, so a cold fetch is reproducible and does not depend on ``~/.m2``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.env import versions
from tests.env.base import (
    Peer,
    PeerError,
    cache_root,
    free_port,
    port_open,
    run_async,
    run_checked,
)

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
HEAP = "512m"
EXTRA_JVM = ["-XX:+UseG1GC"]

POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.remediator.testenv</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# A .properties config keeps Log4j2 away from its YAML/JSON parsers (no Jackson needed).
LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _stamp() -> str:
    return f"kafka={versions.KAFKA} log4j={versions.LOG4J} slf4j={versions.SLF4J}\n"


def kafka_home() -> Path:
    return cache_root() / f"kafka-{versions.KAFKA}"


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """One builder at a time (CLI and pytest workers may race for a cold cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cluster_id() -> str:
    # Kafka's Uuid.toString(): URL-safe base64 of 16 bytes, unpadded; like
    # Uuid.randomUuid() avoid a leading "-", which the CLI would read as an option.
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaPeer(Peer):
    name = "kafka"
    version = versions.KAFKA

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.home = kafka_home()
        self.port = 0
        self.controller_port = 0
        self.bootstrap = ""

    # -- build -----------------------------------------------------------------------
    def build(self) -> None:
        stamp = self.home / ".complete"
        if stamp.is_file() and stamp.read_text() == _stamp():
            return
        with _build_lock(cache_root() / ".kafka.lock"):
            if stamp.is_file() and stamp.read_text() == _stamp():
                return  # another process built it while we waited
            self._fetch()

    def _fetch(self) -> None:
        if shutil.which("mvn") is None or shutil.which("java") is None:
            raise PeerError(
                "kafka: needs `mvn` and `java` (17+) to fetch the broker from Maven Central;"
                " run bash tests/env/install-system-deps.sh"
            )
        self.progress(f"kafka: fetching kafka_2.13:{versions.KAFKA} from Maven Central")
        began = time.monotonic()
        tmp = cache_root() / f".kafka-{versions.KAFKA}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "libs").mkdir(parents=True)
        (tmp / "pom.xml").write_text(
            POM.format(kafka=versions.KAFKA, log4j=versions.LOG4J, slf4j=versions.SLF4J)
        )
        try:
            run_checked(
                [
                    "mvn",
                    "-q",
                    "-B",
                    "-f",
                    str(tmp / "pom.xml"),
                    f"-Dmaven.repo.local={cache_root() / 'm2'}",
                    f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={tmp / 'libs'}",
                ],
                what="kafka: maven copy-dependencies",
                cwd=tmp,
                progress=self.progress,
            )
            self._check_libs(tmp / "libs")
            (tmp / ".complete").write_text(_stamp())
            shutil.rmtree(self.home, ignore_errors=True)
            tmp.rename(self.home)  # atomic: a half-fetched cache is never seen
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.progress(f"kafka: fetched in {time.monotonic() - began:.0f}s into {self.home}")

    @staticmethod
    def _check_libs(libs: Path) -> None:
        core = sorted(libs.glob(f"kafka_2.13-{versions.KAFKA}.jar"))
        if not core:
            raise PeerError(f"kafka: kafka_2.13-{versions.KAFKA}.jar missing in {libs}")
        with zipfile.ZipFile(core[0]) as jar:
            names = set(jar.namelist())
        for cls in ("kafka/Kafka.class", "kafka/tools/StorageTool.class"):
            if cls not in names:
                raise PeerError(f"kafka: {cls} not in {core[0].name}; main classes moved?")
        if not list(libs.glob("log4j-slf4j2-impl-*.jar")):
            raise PeerError("kafka: log4j-slf4j2-impl missing: the broker would log nothing")

    # -- run -------------------------------------------------------------------------
    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        self.build()
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.ports = [self.port, self.controller_port]
        self.bootstrap = f"127.0.0.1:{self.port}"
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        props = self.workdir / "server.properties"
        props.write_text(self._server_properties(data))
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)

        java = [
            "java",
            f"-Xms{HEAP}",
            f"-Xmx{HEAP}",
            *EXTRA_JVM,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            str(self.home / "libs" / "*"),
        ]
        # Formatting writes meta.properties; a short-lived JVM, logged like the broker.
        fmt = self.spawn(
            "kafka-format",
            [*java, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props)],
        )
        assert fmt.proc is not None
        try:
            code = fmt.proc.wait(timeout=120)
        except Exception as exc:
            raise PeerError(f"kafka: storage format hung; log {fmt.log_path}") from exc
        if code != 0:
            fmt.check_alive()
        self.processes.remove(fmt)

        self.spawn("kafka", [*java, "kafka.Kafka", str(props)])
        self.wait_ready(
            lambda: port_open(self.port) and self._metadata_ok(),
            timeout=120,
            what=f"metadata request to {self.bootstrap}",
            interval=0.5,
        )
        return {"kafka_bootstrap": self.bootstrap, "versions": {"kafka": versions.KAFKA}}

    def _server_properties(self, data: Path) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            # One node: every internal topic must fit on it.
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Consumer groups form at once instead of after 3 s.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "log.segment.bytes": str(16 * 1024 * 1024),
        }
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    def _metadata_ok(self) -> bool:
        from aiokafka import AIOKafkaClient

        async def probe() -> bool:
            client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            try:
                await client.bootstrap()
                metadata = await client.fetch_all_metadata()
                return bool(metadata.brokers())
            finally:
                await client.close()

        try:
            return run_async(probe, timeout=15)
        except Exception as exc:  # noqa: BLE001 - not ready yet; the reason goes to the log
            with (self.workdir / "readiness.log").open("a") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {exc!r}\n")
            return False
