"""TLS for the Redis client: the context an ``Endpoint``'s files make, the handshake, and what
a TLS or socket failure means in words (with what to check).

Standard library only, Python 3.8+, no relative imports: shipped to target hosts as
``module_utils/flashmm_redis_tls.py`` for ``redis_client.Connection``.  ``ssl`` is imported on
first TLS use only: it is the costliest import here, and every module call on a target imports
the client.  Messages name files and the endpoint label; the caller's ``error`` scrubs them.
"""

from __future__ import annotations

import re
import socket
import sys
from typing import Any, Callable


def ssl_module():
    """The ssl module, imported on first TLS use only (see the module docstring)."""
    import ssl
    return ssl


def is_ssl_error(exc: BaseException, *names: str) -> bool:
    # Without TLS, ssl was never imported and no exception can be one of its types.
    ssl = sys.modules.get("ssl")
    if ssl is None:
        return False
    return isinstance(exc, tuple(getattr(ssl, n) for n in (names or ("SSLError",))))


def ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    if reason:
        return reason
    if is_ssl_error(exc, "SSLEOFError", "SSLZeroReturnError"):
        return "the server closed the TLS connection"
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or ""))
    return text or exc.__class__.__name__


def os_reason(exc: BaseException) -> str:
    if is_ssl_error(exc):
        return ssl_reason(exc)
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def tls_hint(reason: str) -> str:
    upper = reason.upper()
    if "WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER_FAILURE" in upper:
        return " (is that port speaking TLS? a plain redis port answers in clear text)"
    if "CERTIFICATE_REQUIRED" in upper or "HANDSHAKE_FAILURE" in upper:
        return " (the server may require a client certificate: set cert_file and key_file)"
    if any(word in upper for word in ("UNKNOWN_CA", "BAD_CERTIFICATE", "UNSUPPORTED_CERTIFICATE",
                                      "CERTIFICATE_UNKNOWN", "CERTIFICATE_EXPIRED")):
        return " (the server rejected the client certificate)"
    return ""


def tls_context(ep: Any, where: str, error: Callable[[str, str], Any]) -> Any:
    """The ``ssl.SSLContext`` for endpoint ``ep`` (``where``: its label); a file that cannot be
    loaded raises ``error(message, "tls")``."""
    ssl = ssl_module()
    try:
        context = ssl.create_default_context(cafile=ep.ca_file)
    except (OSError, ValueError) as exc:     # ssl.SSLError is an OSError
        reason = os_reason(exc)
        raise error("cannot load the CA bundle %s for redis at %s: %s"
                    % (ep.ca_file, where, reason), "tls") from None
    if not ep.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif not ep.check_hostname:
        context.check_hostname = False
    if ep.cert_file is not None:
        try:
            # A callable password: an encrypted key fails instead of prompting on a TTY.
            context.load_cert_chain(ep.cert_file, ep.key_file, password=lambda: b"")
        except (OSError, ValueError) as exc:
            reason = os_reason(exc)
            if "PEM lib" in reason:
                reason += " (not a PEM certificate and key, or an encrypted key, which is " \
                          "not supported)"
            raise error("cannot load the client certificate %s (key %s) for redis at %s: %s"
                        % (ep.cert_file, ep.key_file or ep.cert_file, where, reason),
                        "tls") from None
    return context


def handshake(context: Any, sock: socket.socket, ep: Any, where: str, timeout: float,
              error: Callable[[str, str], Any]) -> Any:  # ssl.SSLSocket
    """``sock`` wrapped in TLS within ``timeout`` seconds; a failure raises ``error(message,
    kind)`` saying what it means and what to check."""
    ssl = ssl_module()
    problem = None
    sock.settimeout(timeout)
    try:
        return context.wrap_socket(sock, server_hostname=ep.server_name or ep.host)
    except ssl.SSLCertVerificationError as exc:
        problem = error(
            "TLS certificate verification failed for redis at %s: %s (check ca_file, and "
            "server_name when the certificate names another host)"
            % (where, ssl_reason(exc)), "tls")
    except socket.timeout:
        problem = error("timed out after %gs in the TLS handshake with redis at %s "
                        "(is that port speaking TLS?)" % (ep.timeout, where), "connect")
    except ssl.SSLError as exc:
        reason = ssl_reason(exc)
        problem = error("TLS handshake with redis at %s failed: %s%s"
                        % (where, reason, tls_hint(reason)), "tls")
    except OSError as exc:
        problem = error("connection to redis at %s failed during the TLS handshake: %s"
                        % (where, os_reason(exc)), "tls")
    raise problem
