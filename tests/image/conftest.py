from __future__ import annotations

import pytest

from tests.image.buildah import build_image


@pytest.fixture(scope="session")
def image() -> str:
    """The image built from this tree (a no-op when it is up to date); never skipped."""
    return build_image()
