"""The FlashMM configuration schema: the single source of truth.

Every leaf field carries, in its metadata, the environment variable it maps to (both ways),
whether it is a secret and whether it may be overridden at runtime through Redis.  Defaults are
the seed's ``DEFAULT_CONFIG``; ``.env`` names, Redis keys, the reference docs and
``.env.example`` are all derived from this module (see ``FIELDS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import re

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr
from pydantic_core import PydanticCustomError

from flashmm_deploy.redis.keys import config_key

ENVIRONMENTS = ("local", "development", "testnet", "production")
Environment = Literal["local", "development", "testnet", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SeiNetwork = Literal["mainnet", "testnet", "devnet"]

# Sei networks and the only chain id each accepts (DESIGN "Validation rules").
SEI_CHAIN_IDS = {"mainnet": "pacific-1", "testnet": "atlantic-2", "devnet": "arctic-1"}
LOG_LEVEL_ORDER = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


_HOST = re.compile(r"[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\]")
# The type of the error a URL with credentials raises: validate.py never shows its value.
URL_CREDENTIALS = "url_credentials"


def _scheme_check(*schemes: str):
    def check(value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        if not value.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError("must start with " + " or ".join(f"{s}://" for s in schemes))
        rest = value.split("://", 1)[1]
        if "@" in rest:       # user:password@; a password may hold '/', '?', '#': anywhere
            raise PydanticCustomError(
                URL_CREDENTIALS, "must not carry credentials (user:password@); put the "
                "password in the vault (e.g. flashmm_secrets.redis_password: deploy adds it to "
                "REDIS_URL in .env only)")
        authority = rest.split("?", 1)[0].split("#", 1)[0].split("/", 1)[0]
        host = authority.rsplit(":", 1)[0] if not authority.startswith("[") else \
            authority.split("]", 1)[0] + "]"
        if not _HOST.fullmatch(host):
            raise ValueError("has no valid host after the scheme")
        return value

    return check


HttpUrl = Annotated[str, AfterValidator(_scheme_check("http", "https"))]
WsUrl = Annotated[str, AfterValidator(_scheme_check("ws", "wss"))]
RedisUrl = Annotated[str, AfterValidator(_scheme_check("redis", "rediss"))]
Port = Annotated[int, Field(ge=1, le=65535)]


def fld(default: Any, env: str, doc: str, *, runtime: bool = False, secret: bool = False, **kw):
    """A schema field with the metadata the rest of the toolkit derives from."""
    extra = {"env": env, "runtime": runtime, "secret": secret}
    if default is ...:
        return Field(description=doc, json_schema_extra=extra, **kw)
    return Field(default=default, description=doc, json_schema_extra=extra, **kw)


class Section(BaseModel):
    # strict: no silent coercion ("100" is not a float, true is not an int); ints are accepted
    # for floats.  No NaN or infinity anywhere, no string longer than any sane value.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                              str_max_length=4096)


class App(Section):
    environment: Environment = fld("development", "ENVIRONMENT", "Deployment environment")
    name: str = fld("FlashMM", "FLASHMM_APP_NAME", "Application name")
    version: str = fld("1.0.0", "FLASHMM_VERSION", "Application version")
    debug: bool = fld(False, "FLASHMM_DEBUG", "Debug mode (must be false in production)")
    log_level: LogLevel = fld("INFO", "FLASHMM_LOG_LEVEL", "Log level (WARNING or higher in production)")


class Trading(Section):
    max_position_percent: float = fld(
        2.0, "TRADING_MAX_POSITION_PERCENT", "Max position as % of account", gt=0, le=100)
    max_position_usdc: float = fld(
        2000.0, "TRADING_MAX_POSITION_USDC", "Max position in USDC, in (0, 100000]",
        runtime=True, gt=0, le=100000)
    quote_frequency_hz: float = fld(
        5.0, "TRADING_QUOTE_FREQUENCY_HZ", "Quote updates per second, in (0, 10]",
        runtime=True, gt=0, le=10)
    max_quote_levels: int = fld(3, "TRADING_MAX_QUOTE_LEVELS", "Quote levels per side", gt=0,
                                le=100)
    spread_buffer_bps: float = fld(5.0, "TRADING_SPREAD_BUFFER_BPS", "Spread buffer (bps)", ge=0,
                                   le=10000)
    risk_multiplier: float = fld(1.0, "TRADING_RISK_MULTIPLIER", "Risk multiplier", gt=0, le=100)


class ML(Section):
    inference_timeout_ms: int = fld(5, "ML_INFERENCE_TIMEOUT_MS", "Inference timeout (ms)", gt=0,
                                    le=60000)
    batch_size: int = fld(1, "ML_BATCH_SIZE", "Inference batch size", gt=0, le=100000)
    confidence_threshold: float = fld(
        0.6, "ML_CONFIDENCE_THRESHOLD", "Minimum model confidence, in [0, 1]",
        runtime=True, ge=0, le=1)
    model_path: str = fld("/app/models/latest.pt", "ML_MODEL_PATH", "Model file in the container")


class API(Section):
    host: str = fld("0.0.0.0", "API_HOST", "Bind address of the API")
    port: Port = fld(8000, "API_PORT", "API port, 1-65535")
    cors_origins: list[str] = fld(["*"], "API_CORS_ORIGINS", "Allowed CORS origins (env: JSON array)",
                                  max_length=100)
    rate_limit_per_minute: int = fld(60, "API_RATE_LIMIT_PER_MINUTE", "Requests per minute", gt=0,
                                     le=10**7)


class Sei(Section):
    network: SeiNetwork = fld(..., "SEI_NETWORK", "mainnet, testnet or devnet")
    rpc_url: HttpUrl = fld(..., "SEI_RPC_URL", "Sei RPC endpoint, http(s)://")
    ws_url: WsUrl = fld(..., "SEI_WS_URL", "Sei websocket endpoint, ws(s)://")
    chain_id: str = fld(..., "SEI_CHAIN_ID", "Chain id matching the network")


class Cambrian(Section):
    base_url: HttpUrl = fld("https://api.cambrian.com", "CAMBRIAN_BASE_URL", "Cambrian API base URL")


class Redis(Section):
    host: str = fld("localhost", "REDIS_HOST", "Redis host as the app sees it")
    port: Port = fld(6379, "REDIS_PORT", "Redis port")
    db: int = fld(0, "REDIS_DB", "Redis database number (below flashmm_redis_databases)", ge=0,
                  le=100000)
    password_required: bool = fld(False, "REDIS_PASSWORD_REQUIRED", "Require secrets.redis_password")
    url: Optional[RedisUrl] = fld(
        None, "REDIS_URL", "redis(s):// URL; unset means redis://host:port/db")


class InfluxDB(Section):
    host: str = fld("localhost", "INFLUXDB_HOST", "InfluxDB host as the app sees it")
    port: Port = fld(8086, "INFLUXDB_PORT", "InfluxDB port")
    database: str = fld("flashmm", "INFLUXDB_DATABASE", "InfluxDB database name")
    auth_required: bool = fld(False, "INFLUXDB_AUTH_REQUIRED", "Require secrets.influxdb_token")
    url: Optional[HttpUrl] = fld(None, "INFLUXDB_URL", "http(s):// URL; unset means http://host:port")
    org: str = fld("flashmm", "INFLUXDB_ORG", "InfluxDB organisation")
    bucket: str = fld("metrics", "INFLUXDB_BUCKET", "InfluxDB bucket")


class Storage(Section):
    redis: Redis = Field(default_factory=Redis)
    influxdb: InfluxDB = Field(default_factory=InfluxDB)


class AlertThresholds(Section):
    max_drawdown_percent: float = fld(
        5.0, "MONITORING_ALERT_MAX_DRAWDOWN_PERCENT", "Alert above this drawdown (%)", gt=0, le=100)
    min_uptime_percent: float = fld(
        95.0, "MONITORING_ALERT_MIN_UPTIME_PERCENT", "Alert below this uptime (%)", ge=0, le=100)


class Monitoring(Section):
    grafana_enabled: bool = fld(False, "MONITORING_GRAFANA_ENABLED", "Run Grafana")
    grafana_url: HttpUrl = fld("https://flashmm.grafana.net", "GRAFANA_URL", "Grafana URL")
    twitter_enabled: bool = fld(False, "MONITORING_TWITTER_ENABLED", "Post to Twitter")
    alert_enabled: bool = fld(True, "MONITORING_ALERT_ENABLED", "Send alerts", runtime=True)
    health_check_interval_seconds: int = fld(
        30, "HEALTH_CHECK_INTERVAL_SECONDS", "Health check interval (s)", gt=0, le=86400)
    metrics_collection_interval_seconds: int = fld(
        10, "METRICS_COLLECTION_INTERVAL_SECONDS", "Metrics interval (s)", gt=0, le=86400)
    alert_thresholds: AlertThresholds = Field(default_factory=AlertThresholds)


class Security(Section):
    encryption_required: bool = fld(False, "SECURITY_ENCRYPTION_REQUIRED", "Encrypt stored data")
    audit_logging: bool = fld(False, "SECURITY_AUDIT_LOGGING", "Audit-log every action")
    ip_whitelist_enabled: bool = fld(False, "SECURITY_IP_WHITELIST_ENABLED", "Restrict API by IP")


def _secret(env: str, doc: str):
    return fld(None, env, doc, secret=True)


class Secrets(Section):
    cambrian_api_key: Optional[SecretStr] = _secret("CAMBRIAN_API_KEY", "Cambrian SDK API key")
    cambrian_secret_key: Optional[SecretStr] = _secret("CAMBRIAN_SECRET_KEY", "Cambrian SDK secret")
    redis_password: Optional[SecretStr] = _secret(
        "REDIS_PASSWORD", "Redis password of the app's user (flashmm)")
    redis_password_previous: Optional[SecretStr] = _secret(
        "REDIS_PASSWORD_PREVIOUS", "Previous Redis password, accepted only during a rotation")
    redis_deploy_password: Optional[SecretStr] = _secret(
        "REDIS_DEPLOY_PASSWORD", "Redis password of deploy's user (flashmm-deploy); never in the "
        "app's files")
    redis_deploy_password_previous: Optional[SecretStr] = _secret(
        "REDIS_DEPLOY_PASSWORD_PREVIOUS",
        "Previous deploy Redis password, accepted only during a rotation")
    influxdb_token: Optional[SecretStr] = _secret("INFLUXDB_TOKEN", "InfluxDB API token")
    influxdb_admin_password: Optional[SecretStr] = _secret(
        "INFLUXDB_ADMIN_PASSWORD", "InfluxDB admin password (initial setup when auth is required)")
    grafana_api_key: Optional[SecretStr] = _secret("GRAFANA_API_KEY", "Grafana API key")
    twitter_bearer_token: Optional[SecretStr] = _secret("TWITTER_BEARER_TOKEN", "Twitter bearer token")
    twitter_api_key: Optional[SecretStr] = _secret("TWITTER_API_KEY", "Twitter API key")
    twitter_api_secret: Optional[SecretStr] = _secret("TWITTER_API_SECRET", "Twitter API secret")
    secret_key: Optional[SecretStr] = _secret("SECRET_KEY", "JWT signing key")
    encryption_key: Optional[SecretStr] = _secret("ENCRYPTION_KEY", "Data encryption key (Fernet)")
    old_encryption_key: Optional[SecretStr] = _secret(
        "OLD_ENCRYPTION_KEY", "Previous encryption key, only during key rotation")
    api_auth_token: Optional[SecretStr] = _secret("API_AUTH_TOKEN", "Admin endpoint token")
    alert_webhook_url: Optional[SecretStr] = _secret("ALERT_WEBHOOK_URL", "Alert webhook URL")


class FlashMMConfig(Section):
    app: App = Field(default_factory=App)
    trading: Trading = Field(default_factory=Trading)
    ml: ML = Field(default_factory=ML)
    api: API = Field(default_factory=API)
    sei: Sei
    cambrian: Cambrian = Field(default_factory=Cambrian)
    storage: Storage = Field(default_factory=Storage)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    security: Security = Field(default_factory=Security)
    secrets: Secrets = Field(default_factory=Secrets)


# --------------------------------------------------------------------------------------------
# Derived index of leaf fields
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldSpec:
    path: str            # dotted, e.g. "trading.max_position_usdc"
    env: str             # environment variable name
    kind: str            # "str" | "int" | "float" | "bool" | "list" | "choice"
    choices: tuple       # allowed values for kind "choice"
    optional: bool       # None (unset) is allowed
    required: bool       # no default: some layer must set it
    default: Any
    secret: bool
    runtime: bool
    doc: str
    bounds: tuple = ()   # ((name, limit), ...): gt, ge, lt, le as the field constrains it

    @property
    def section(self) -> str:
        return self.path.rsplit(".", 1)[0]

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[1]

    @property
    def redis_key(self) -> str:
        return config_key(self.path)


def _kind(annotation: Any) -> tuple[str, tuple, bool]:
    optional = False
    origin = get_origin(annotation)
    if origin is Union:
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        annotation = args[0]
        origin = get_origin(annotation)
    if origin is Annotated:
        annotation = get_args(annotation)[0]
        origin = get_origin(annotation)
    if origin is Literal:
        return "choice", get_args(annotation), optional
    if origin is list:
        return "list", (), optional
    if annotation is SecretStr:
        return "str", (), optional
    return {bool: "bool", int: "int", float: "float", str: "str"}[annotation], (), optional


def _walk(model: type[BaseModel], prefix: str = ""):
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _walk(ann, path + ".")
            continue
        extra = info.json_schema_extra or {}
        kind, choices, optional = _kind(ann)
        bounds = tuple((name, getattr(m, name)) for m in info.metadata
                       for name in ("gt", "ge", "lt", "le") if hasattr(m, name))
        yield FieldSpec(
            path=path, env=extra["env"], kind=kind, choices=choices, optional=optional,
            required=info.is_required(), default=None if info.is_required() else info.get_default(),
            secret=extra["secret"], runtime=extra["runtime"], doc=info.description or "",
            bounds=bounds,
        )


FIELDS: dict[str, FieldSpec] = {f.path: f for f in _walk(FlashMMConfig)}
FIELDS_BY_ENV: dict[str, FieldSpec] = {f.env: f for f in FIELDS.values()}
SECTIONS: frozenset[str] = frozenset(p.rsplit(".", 1)[0] for p in FIELDS) | frozenset(
    p.split(".")[0] for p in FIELDS)
RUNTIME_FIELDS: tuple[FieldSpec, ...] = tuple(f for f in FIELDS.values() if f.runtime)
SECRET_FIELDS: tuple[FieldSpec, ...] = tuple(f for f in FIELDS.values() if f.secret)

assert len(FIELDS_BY_ENV) == len(FIELDS), "two fields share an environment variable"
assert not any(f.secret and f.runtime for f in FIELDS.values()), "a secret cannot be runtime"
