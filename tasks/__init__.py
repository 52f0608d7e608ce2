"""Prefect tasks: each wraps one quantmill core step with retries, timeouts and artifacts."""
