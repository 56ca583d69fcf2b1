"""The only place vendor SDKs for the systems we act on are imported."""
