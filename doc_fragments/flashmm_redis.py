"""Doc fragment: the Redis connection options of the modules that talk to a host's Redis
(``seed_apply.ENDPOINT_OPTIONS`` is their argument spec)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  host: {description: Redis host as the target reaches it., type: str, default: 127.0.0.1}
  port: {description: Redis port., type: int, default: 6379}
  db: {description: Redis database number., type: int, default: 0}
  username: {description: ACL user (needs O(password); the default user when unset)., type: str}
  password: {description: Redis password (never logged)., type: str}
  tls: {description: Connect with TLS., type: bool, default: false}
  ca_file: {description: "CA bundle to verify the server (default: the system's).", type: path}
  cert_file: {description: Client certificate for mutual TLS., type: path}
  key_file: {description: Client key for mutual TLS., type: path}
  tls_verify: {description: Verify the server's certificate and host name., type: bool, default: true}
  timeout: {description: Socket timeout in seconds (each Redis operation)., type: float, default: 5.0}
"""
