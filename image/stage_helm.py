"""Put the helm binary the tests use into the build context as build/helm.

The image must carry helm at exactly tests/env/versions.py's HELM. Go base images cannot
be pulled here, so the binary is built the way the tests build it (tests/env/gobuild.py,
a no-op when cached) and the Dockerfile COPYs it. Run from the repository root:
``python image/stage_helm.py [DEST]``.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.env import gobuild, versions  # noqa: E402


def stage(dest: Path) -> Path:
    built = gobuild.build_go(gobuild.HELM, lambda line: print(f"stage-helm: {line}")) / "helm"
    out = subprocess.run(
        [str(built), "version", "--short"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if not out.startswith(versions.HELM):
        raise SystemExit(f"stage-helm: {built} reports {out!r}, expected {versions.HELM}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Copy only when different, so the build context (and its layer cache) stays unchanged.
    if not (dest.is_file() and filecmp.cmp(built, dest, shallow=False)):
        shutil.copy2(built, dest)
        dest.chmod(0o755)
    print(f"stage-helm: {dest} is helm {out}")
    return dest


if __name__ == "__main__":
    stage(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "helm")
