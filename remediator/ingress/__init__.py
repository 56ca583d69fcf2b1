"""HTTP intake (webhooks, API, health, metrics)."""
