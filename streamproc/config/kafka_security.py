"""Spark-style `kafka.security.protocol` / `kafka.sasl.*` / `kafka.ssl.*` settings -> aiokafka.

Checked when the plan is built, so that `streamproc validate` refuses what a
Kafka client would refuse later (or worse, ignore): aiokafka raises its own
ValueError only when the consumer is created, and it silently drops an SSL
context under a plaintext protocol. The SSL context is built here with the
standard library (as `aiokafka.helpers.create_ssl_context` does), so that
validating a config never imports the Kafka client. Messages name keys and
file paths, never a password.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

_PARAMS = "extract.connectionParams"
_PROTOCOL = "kafka.security.protocol"
_MECHANISM = "kafka.sasl.mechanism"
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "GSSAPI", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
# Mechanisms that log in with a user name and a password (aiokafka: sasl_plain_*).
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_SASL_KEYS: Mapping[str, str] = {
    _MECHANISM: "sasl_mechanism",
    "kafka.sasl.username": "sasl_plain_username",
    "kafka.sasl.plain.username": "sasl_plain_username",
    "kafka.sasl.password": "sasl_plain_password",
    "kafka.sasl.plain.password": "sasl_plain_password",
    "kafka.sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "kafka.sasl.kerberos.domain.name": "sasl_kerberos_domain_name",
}
_SSL_KEYS: Mapping[str, str] = {
    "kafka.ssl.cafile": "cafile",
    "kafka.ssl.ca.location": "cafile",
    "kafka.ssl.certfile": "certfile",
    "kafka.ssl.certificate.location": "certfile",
    "kafka.ssl.keyfile": "keyfile",
    "kafka.ssl.key.location": "keyfile",
    "kafka.ssl.key.password": "password",
}


def kafka_client_params(security: Mapping[str, str]) -> dict[str, Any]:
    """aiokafka keyword arguments for a secured cluster (an empty dict for a plain one).

    Raises:
        ValueError: one line naming the key: a key this runtime cannot map, a protocol
            or SASL mechanism the client does not support, a login without its user
            or password, SSL keys under a protocol without SSL, or a certificate or
            key file that cannot be loaded.
    """
    params: dict[str, Any] = {}
    ssl_args: dict[str, str] = {}
    ssl_keys: dict[str, str] = {}
    for key, value in security.items():
        if key == _PROTOCOL:
            params["security_protocol"] = value.upper()
        elif key in _SASL_KEYS:
            params[_SASL_KEYS[key]] = value.upper() if key == _MECHANISM else value
        elif key in _SSL_KEYS:
            ssl_args[_SSL_KEYS[key]] = value
            ssl_keys[_SSL_KEYS[key]] = key
        else:
            known = ", ".join(sorted({_PROTOCOL, *_SASL_KEYS, *_SSL_KEYS}))
            raise ValueError(f"{_PARAMS}.{key}: not supported; supported: {known}")
    protocol = params.get("security_protocol", "PLAINTEXT")
    if protocol not in _PROTOCOLS:
        raise ValueError(
            f"{_PARAMS}.{_PROTOCOL}: '{security[_PROTOCOL]}' is not a security protocol; "
            f"expected {', '.join(_PROTOCOLS)}"
        )
    if protocol.startswith("SASL_"):
        _check_sasl(params)
    if protocol.endswith("SSL"):
        params["ssl_context"] = _ssl_context(ssl_args, ssl_keys)
    elif ssl_keys:
        first = sorted(ssl_keys.values())[0]
        raise ValueError(
            f"{_PARAMS}.{first}: used only with {_PROTOCOL} SSL or SASL_SSL, "
            f"and the protocol is {protocol}; set the protocol or remove the kafka.ssl.* keys"
        )
    return params


def _check_sasl(params: Mapping[str, Any]) -> None:
    mechanism = params.get("sasl_mechanism", "PLAIN")
    if mechanism not in _MECHANISMS:
        raise ValueError(
            f"{_PARAMS}.{_MECHANISM}: '{mechanism}' is not supported; "
            f"supported: {', '.join(_MECHANISMS)}"
        )
    if mechanism in _PASSWORD_MECHANISMS:
        for arg, key in (
            ("sasl_plain_username", "kafka.sasl.username"),
            ("sasl_plain_password", "kafka.sasl.password"),
        ):
            if not params.get(arg):
                raise ValueError(f"{_PARAMS}.{key}: required by SASL mechanism {mechanism}")


def _ssl_context(args: Mapping[str, str], keys: Mapping[str, str]) -> ssl.SSLContext:
    """A client SSL context: the CA (else the system's), and the client certificate if given."""
    cafile = args.get("cafile")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(_load_error(keys.get("cafile", "kafka.ssl.cafile"), cafile, exc)) from None
    certfile, keyfile = args.get("certfile"), args.get("keyfile")
    if certfile is None:
        if keyfile is not None or "password" in args:
            first = keys["keyfile"] if keyfile is not None else keys["password"]
            raise ValueError(f"{_PARAMS}.{first}: needs kafka.ssl.certfile (a client certificate)")
        return context
    try:
        # A password is always passed (empty if none given): without one, OpenSSL
        # would prompt on the terminal for an encrypted key and hang a worker.
        context.load_cert_chain(certfile, keyfile, args.get("password", ""))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(_load_error(keys["certfile"], certfile, exc)) from None
    return context


def _load_error(key: str, path: str | None, exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{_PARAMS}.{key}: cannot load '{path}': {reason}"
