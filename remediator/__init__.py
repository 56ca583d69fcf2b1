"""remediator: event-driven alert-to-remediation daemon for Kubernetes."""

__version__ = "0.1.0.dev0"
