"""Fixtures for every test; the helpers behind them live in support.py."""

from support import redis_db, redis_server  # noqa: F401  (pytest fixtures)
from engine_support import docker_engine  # noqa: F401  (pytest fixture)
