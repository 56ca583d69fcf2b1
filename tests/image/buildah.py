"""The built image, run the way this machine can: `buildah run --isolation chroot`.

No container daemon here, and `podman run` is refused by the sandbox (crun's setrlimit),
so each test makes a working container with `buildah from` and runs commands in it. With
chroot isolation there is no network namespace: the container shares the host's network,
so a daemon inside listens on the host's loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("REMEDIATOR_IMAGE", "remediator:dev")
BUILDAH = ("buildah", "--storage-driver", os.environ.get("BUILDAH_STORAGE_DRIVER", "vfs"))


def build_image() -> str:
    """Build (or find up to date) the image from this tree; fail loudly, never skip."""
    proc = subprocess.run(
        ["bash", "image/build.sh"],
        cwd=REPO,
        env={**os.environ, "IMAGE": IMAGE, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr)[-4000:]
        raise AssertionError(f"image/build.sh failed ({proc.returncode}):\n{out}")
    return IMAGE


def buildah(*args: str, check: bool = True) -> str:
    proc = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
    return proc.stdout


def image_config(image: str) -> dict[str, Any]:
    """The OCI config of ``image``: Entrypoint, Cmd, User, Env, Labels..."""
    config: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]
    return config


class Container:
    """One working container of the image; removed (with its processes) by the context."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.procs: list[subprocess.Popen[bytes]] = []

    def argv(
        self,
        command: Sequence[str],
        *,
        volumes: Mapping[Path, str] = {},
        env: Mapping[str, str] = {},
        user: str | None = None,
    ) -> list[str]:
        argv = [*BUILDAH, "run", "--isolation", "chroot"]
        for host, inside in volumes.items():
            argv += ["--volume", f"{host}:{inside}"]
        for name, value in env.items():
            argv += ["--env", f"{name}={value}"]
        if user is not None:
            argv += ["--user", user]
        return [*argv, self.cid, "--", *command]

    def run(self, command: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command, **kw), capture_output=True, text=True, check=False, timeout=120
        )

    def start(self, command: Sequence[str], *, log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        """``command`` in the background, in a process group of its own (for cleanup)."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.argv(command, **kw),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def unmark_volume(self, path: str) -> None:
        """Drop ``path`` from this container's VOLUMEs, so a host directory mounted there wins.

        buildah 1.28 mounts an anonymous copy of each image VOLUME, and when `--volume`
        names the same path it picks one of the two at random (about half the runs got
        the anonymous copy). A kubelet mounts the pod's volume there instead; this does
        the same. The image's own config keeps the VOLUME.
        """
        buildah("config", "--volume", f"{path}-", self.cid)

    def mount(self) -> Path:
        return Path(buildah("mount", self.cid).strip())

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@contextmanager
def container(image: str) -> Iterator[Container]:
    cid = buildah("from", "--pull=never", image).strip()
    box = Container(cid)
    try:
        yield box
    finally:
        box.kill_all()
        buildah("umount", cid, check=False)
        buildah("rm", cid, check=False)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), so a test can find the one it started."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])  # the real uid
    raise AssertionError(f"no Uid line for pid {pid}")
