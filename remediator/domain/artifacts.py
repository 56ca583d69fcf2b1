"""Artifact ids as CDEvents gives them: package URLs (purls).

Parsed and built with packageurl-python, the purl specification's own library, so a
version is read as the specification says (``pkg:oci/app@sha256%3Aab12`` is version
``sha256:ab12``), never by splitting text. It is a pure parser (no I/O); this module is
the only one that imports it (an import-linter contract says so), and it turns the
library's errors into ours.
"""

from __future__ import annotations

from packageurl import PackageURL

from remediator.domain.errors import InvalidInput


def purl_version(artifact_id: str, *, where: str) -> str | None:
    """The version a purl names (decoded), None if it names none; ``InvalidInput``
    naming ``where`` if ``artifact_id`` is not a purl."""
    try:
        purl = PackageURL.from_string(artifact_id)
    except ValueError as exc:
        raise InvalidInput(f"not a package URL (purl): {exc}", where=where) from None
    return purl.version or None


def service_purl(service: str, *, version: str | None) -> str:
    """``pkg:generic/<service>[@<version>]``: the artifact of a service remediator
    knows by name and deploy revision only (it never sees the image)."""
    return str(PackageURL(type="generic", name=service, version=version).to_string())
