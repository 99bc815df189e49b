"""The Redis client targets run (standard library only; shipped as module_utils/flashmm_redis_*.py)."""
