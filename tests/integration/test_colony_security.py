"""The pull API off loopback (issue 16): TLS and a bearer token are required, and checked.

A non-loopback address (10.77.0.1) added inside the tests' private network namespace stands
for a host address; no other host can reach it. A throwaway CA signs the agent's certificate and a
client certificate (the `cryptography` package).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.pullapi._generated import agent_pb2_grpc as pb_grpc
from tests.helpers.agent_process import AgentProcess, run_cli
from tests.helpers.fleet import ColonyProcess, pull_agent, send_http
from tests.helpers.processes import free_port

ADDRESS = "10.77.0.1"
TOKEN = "s3cret-token-0123456789abcdef"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("coral test CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("agent", server_key, (ca.subject, ca_key), ip=ADDRESS)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("colony", client_key, (ca.subject, ca_key))
    return {
        "ca": _write(root / "ca.pem", _pem(ca), 0o644),
        "server_cert": _write(root / "server.pem", _pem(server), 0o644),
        "server_key": _write(root / "server.key", _key_pem(server_key)),
        "client_cert": _write(root / "client.pem", _pem(client), 0o644),
        "client_key": _write(root / "client.key", _key_pem(client_key)),
        "token": _write(root / "token", TOKEN.encode() + b"\n"),
        "wrong_token": _write(root / "wrong-token", b"not-the-right-token-at-all\n"),
        "open_token": _write(root / "open-token", TOKEN.encode(), 0o644),
    }


@pytest.fixture(scope="module")
def off_loopback() -> Iterator[str]:
    """10.77.0.1 in the tests' private namespace: not a loopback address, though only this namespace
    reaches it (it sits on the namespace's lo, as the kernel may lack the dummy and veth drivers)."""
    subprocess.run(["ip", "addr", "add", f"{ADDRESS}/32", "dev", "lo"], check=True)
    try:
        yield ADDRESS
    finally:
        subprocess.run(["ip", "addr", "del", f"{ADDRESS}/32", "dev", "lo"], check=False)


def _tls_settings(pki: dict[str, Path], port: int, *, mtls: bool = False) -> dict[str, object]:
    tls: dict[str, str] = {"cert": str(pki["server_cert"]), "key": str(pki["server_key"])}
    if mtls:
        tls["client_ca"] = str(pki["ca"])
    return {"colony_api": {"endpoint": f"{ADDRESS}:{port}", "tls": tls, "token_file": str(pki["token"])}}


def test_off_loopback_without_tls_or_token_refuses_to_start(tmp_path: Path, off_loopback: str) -> None:
    agent = pull_agent(tmp_path / "plain", "plain", {"colony_api": {"endpoint": f"{ADDRESS}:{free_port(ADDRESS)}"}})
    result = run_cli("start", "--config", str(agent.config_path), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "is not loopback: it needs colony_api.tls" in result.stderr


def test_a_token_file_others_can_read_is_refused(tmp_path: Path, pki: dict[str, Path], off_loopback: str) -> None:
    settings = _tls_settings(pki, free_port(ADDRESS))
    settings["colony_api"]["token_file"] = str(pki["open_token"])  # type: ignore[index]
    agent = pull_agent(tmp_path / "open", "open", settings)
    result = run_cli("start", "--config", str(agent.config_path), timeout=120)
    assert result.returncode != 0
    assert "has mode 0644" in (result.stderr + agent.log_text())


@pytest.fixture(scope="module")
def tls_agent(
    tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path], off_loopback: str
) -> Iterator[AgentProcess]:
    port = free_port(ADDRESS)
    agent = pull_agent(tmp_path_factory.mktemp("tls-agent"), "secure", _tls_settings(pki, port, mtls=True))
    try:
        agent.start(timeout=120)
        send_http(agent, "vault", {("GET", "/secret", 200): (17, 0.01)})
        agent.wait_for(lambda _s: sum(r["requests"] for r in agent.cli_json("query", "http")) == 17, what="rows")
        yield agent
        agent.stop()
    finally:
        agent.kill()


def _stub(pki: dict[str, Path], address: str, *, client_cert: bool = True) -> tuple[grpc.Channel, object]:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].read_bytes(),
        private_key=pki["client_key"].read_bytes() if client_cert else None,
        certificate_chain=pki["client_cert"].read_bytes() if client_cert else None,
    )
    channel = grpc.secure_channel(address, credentials)
    return channel, pb_grpc.AgentServiceStub(channel)


def test_wrong_or_missing_token_is_refused(tls_agent: AgentProcess, pki: dict[str, Path]) -> None:
    address = tls_agent.status()["colony_api"]["address"]
    channel, stub = _stub(pki, address)
    with channel:
        for metadata in ([], [("authorization", "Bearer not-the-right-token-at-all")]):
            with pytest.raises(grpc.RpcError) as caught:
                stub.QueryEbpfMetrics(pb.QueryEbpfMetricsRequest(), timeout=10, metadata=metadata)  # type: ignore[attr-defined]
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        response = stub.QueryEbpfMetrics(  # type: ignore[attr-defined]
            pb.QueryEbpfMetricsRequest(), timeout=10, metadata=[("authorization", f"Bearer {TOKEN}")]
        )
        assert sum(m.request_count for m in response.http_metrics) == 17


def test_plaintext_and_certificate_less_clients_are_refused(tls_agent: AgentProcess, pki: dict[str, Path]) -> None:
    address = tls_agent.status()["colony_api"]["address"]
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.AgentServiceStub(channel).QueryEbpfMetrics(pb.QueryEbpfMetricsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    channel, stub = _stub(pki, address, client_cert=False)  # mTLS: the agent wants a client certificate
    with channel:
        with pytest.raises(grpc.RpcError) as caught:
            stub.QueryEbpfMetrics(  # type: ignore[attr-defined]
                pb.QueryEbpfMetricsRequest(), timeout=5, metadata=[("authorization", f"Bearer {TOKEN}")]
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_colony_polls_over_tls_with_the_token_and_reports_a_wrong_one(
    tls_agent: AgentProcess, pki: dict[str, Path], tmp_path: Path
) -> None:
    address = tls_agent.status()["colony_api"]["address"]
    tls = {"ca": str(pki["ca"]), "cert": str(pki["client_cert"]), "key": str(pki["client_key"])}
    colony = ColonyProcess(
        tmp_path / "colony",
        {
            "agents": [
                {"id": "secure", "address": address, "tls": tls, "token_file": str(pki["token"])},
                {"id": "secure-wrong", "address": address, "tls": tls, "token_file": str(pki["wrong_token"])},
            ]
        },
    )
    try:
        colony.start()
        colony.wait_for(
            lambda s: (
                any(a["agent_id"] == "secure" and a["rows_stored"] >= 1 for a in s["agents"])
                and any(a["agent_id"] == "secure-wrong" and a["last_error"] for a in s["agents"])
            ),
            what="one agent polled, one refused",
        )
        assert "UNAUTHENTICATED" in colony.agent("secure-wrong")["last_error"]
        assert colony.agent("secure-wrong")["rows_stored"] == 0
        result = colony.query("http")
        assert result["overall"]["requests"] == 17
        colony.stop()
    finally:
        colony.kill()


def test_colony_config_refuses_an_off_loopback_agent_without_tls(tmp_path: Path) -> None:
    colony = ColonyProcess(tmp_path, {"agents": [{"id": "x", "address": f"{ADDRESS}:9001"}]})
    result = run_cli("colony", "start", "--config", str(colony.config_path), timeout=60)
    assert result.returncode == 2
    assert "is not on loopback: it needs tls and token_file" in result.stderr
