"""`kafka.security.protocol` / `kafka.sasl.*` / `kafka.ssl.*` -> aiokafka arguments, checked
at plan time: what the Kafka client would refuse (or silently ignore) is refused here, in one
line that names the key and never the password."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from streamproc.config.kafka_security import kafka_client_params

P = "extract.connectionParams"
SECRET = "s3cr3t-Pa55"


def refusal(security: dict[str, str]) -> str:
    with pytest.raises(ValueError) as raised:
        kafka_client_params(security)
    message = str(raised.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_no_security_keys_is_a_plain_client() -> None:
    assert kafka_client_params({}) == {}


def test_sasl_plaintext_maps_to_aiokafka_names() -> None:
    assert kafka_client_params(
        {
            "kafka.security.protocol": "sasl_plaintext",
            "kafka.sasl.mechanism": "scram-sha-256",
            "kafka.sasl.username": "etl",
            "kafka.sasl.password": SECRET,
        }
    ) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "etl",
        "sasl_plain_password": SECRET,
    }


def test_ssl_without_files_uses_the_system_trust_store() -> None:
    params = kafka_client_params({"kafka.security.protocol": "SSL"})
    assert params["security_protocol"] == "SSL"
    context = params["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("security", "message"),
    [
        (
            {"kafka.sasl.oops": "x"},
            f"{P}.kafka.sasl.oops: not supported; supported: kafka.sasl.kerberos.domain.name, "
            "kafka.sasl.kerberos.service.name, kafka.sasl.mechanism, kafka.sasl.password, "
            "kafka.sasl.plain.password, kafka.sasl.plain.username, kafka.sasl.username, "
            "kafka.security.protocol, kafka.ssl.ca.location, kafka.ssl.cafile, "
            "kafka.ssl.certfile, kafka.ssl.certificate.location, kafka.ssl.key.location, "
            "kafka.ssl.key.password, kafka.ssl.keyfile",
        ),
        (
            {"kafka.security.protocol": "TLS"},
            f"{P}.kafka.security.protocol: 'TLS' is not a security protocol; "
            "expected PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            {"kafka.security.protocol": "SASL_SSL", "kafka.sasl.mechanism": "NTLM"},
            f"{P}.kafka.sasl.mechanism: 'NTLM' is not supported; "
            "supported: PLAIN, GSSAPI, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER",
        ),
        (
            {"kafka.security.protocol": "SASL_PLAINTEXT", "kafka.sasl.password": SECRET},
            f"{P}.kafka.sasl.username: required by SASL mechanism PLAIN",
        ),
        (
            {"kafka.security.protocol": "SASL_PLAINTEXT", "kafka.sasl.username": "etl"},
            f"{P}.kafka.sasl.password: required by SASL mechanism PLAIN",
        ),
        (
            # aiokafka would drop the SSL context of a plaintext client without a word.
            {"kafka.ssl.cafile": "/etc/ca.pem", "kafka.ssl.key.password": SECRET},
            f"{P}.kafka.ssl.cafile: used only with kafka.security.protocol SSL or SASL_SSL, "
            "and the protocol is PLAINTEXT; set the protocol or remove the kafka.ssl.* keys",
        ),
        (
            {"kafka.security.protocol": "SSL", "kafka.ssl.cafile": "/nonexistent/ca.pem"},
            f"{P}.kafka.ssl.cafile: cannot load '/nonexistent/ca.pem': No such file or directory",
        ),
        (
            {"kafka.security.protocol": "SSL", "kafka.ssl.key.location": "/etc/client.key"},
            f"{P}.kafka.ssl.key.location: needs kafka.ssl.certfile (a client certificate)",
        ),
    ],
    ids=[
        "unknown-key",
        "bad-protocol",
        "bad-mechanism",
        "no-username",
        "no-password",
        "ssl-keys-without-ssl",
        "missing-cafile",
        "key-without-cert",
    ],
)
def test_refused_settings_name_the_key(security: dict[str, str], message: str) -> None:
    assert refusal(security) == message


def test_a_certificate_that_does_not_load_is_refused_without_its_password(
    tmp_path: Path,
) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not a certificate\n")
    message = refusal(
        {
            "kafka.security.protocol": "SSL",
            "kafka.ssl.certificate.location": str(cert),
            "kafka.ssl.key.password": SECRET,
        }
    )
    assert message.startswith(f"{P}.kafka.ssl.certificate.location: cannot load '{cert}': ")
