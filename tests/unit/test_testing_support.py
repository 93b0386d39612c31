"""The testing layer's offline parts: certificates and locating binaries."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from customtask_sdk.testing import testbin
from customtask_sdk.testing.certs import CertificateAuthority


def test_client_certificates_carry_user_and_groups() -> None:
    ca = CertificateAuthority("test-ca")
    pair = ca.issue_client("alice", ["approvers", "dev"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["approvers", "dev"]
    assert cert.issuer == ca.cert.subject
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(ca.cert)


def test_serving_certificates_name_dns_and_ip(tmp_path: Path) -> None:
    ca = CertificateAuthority("test-ca")
    pair = ca.issue_serving(["localhost", "127.0.0.1"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    pair.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600


def _executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_locate_names_what_is_missing_and_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTOMTASK_SDK_CACHE", str(tmp_path))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    with pytest.raises(testbin.TestbinMissingError, match="customtask-sdk testbin install") as err:
        testbin.locate()
    assert "kube-apiserver" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_locate_prefers_kubebuilder_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMTASK_SDK_CACHE", str(tmp_path / "cache"))
    versions = testbin.PINNED
    tekton = tmp_path / "cache" / "testbin" / f"tekton-{versions.tekton}"
    for name in ("controller", "entrypoint"):
        _executable(tekton / name)
    (tekton / "config" / "300-crds").mkdir(parents=True)
    _executable(
        tmp_path
        / "cache"
        / "testbin"
        / f"kubernetes-{versions.kubernetes}"
        / "kube-controller-manager"
    )
    assets = tmp_path / "assets"
    for name in ("etcd", "kube-apiserver"):
        _executable(assets / name)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    found = testbin.locate()
    assert found.etcd == assets / "etcd"
    assert found.kube_apiserver == assets / "kube-apiserver"
    assert found.tekton_controller == tekton / "controller"
    assert os.access(found.kube_controller_manager, os.X_OK)


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUSTOMTASK_SDK_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert testbin.cache_dir() == tmp_path / "customtask-sdk"
