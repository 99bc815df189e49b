"""flashmm_config: the configuration client FlashMM imports.

The seed's ``ConfigManager``, corrected: four layers (schema defaults < the environment file
deploy writes < the environment variables the schema names < Redis runtime keys), ``get`` from
memory and typed, ``explain``, ``on_change``, validated ``set_runtime_config`` written and
published as deploy does, hot reload (Redis pub/sub, catch-up by version, file polling), and a
declared behaviour while Redis is down.  ``ConfigManager`` is the sync API,
``AsyncConfigManager`` the asyncio one.

Dependencies: the standard library and PyYAML to read; pydantic (through the deploy toolkit's
schema and validator, imported on the first set) to validate a runtime change.  Redis is spoken
by the project's standard-library client (``flashmm_deploy.redis.client``).
"""

from flashmm_config.aio import AsyncConfigManager
from flashmm_config.layers import ConfigError, Field, load_fields
from flashmm_config.link import RedisUnavailable
from flashmm_config.manager import ConfigManager
from flashmm_config.validation import RuntimeSetRefused

__all__ = ["AsyncConfigManager", "ConfigError", "ConfigManager", "Field", "RedisUnavailable",
           "RuntimeSetRefused", "load_fields"]
