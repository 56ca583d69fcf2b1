"""Executor: locks, dedup, cooldowns, circuit breaker, verification, timeline."""
