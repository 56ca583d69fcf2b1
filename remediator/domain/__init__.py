"""Pure domain model: no I/O, no clocks, no vendor SDKs."""
