"""The Gateway API CRDs for the local cluster: which manifests, in what order, fetched once, applied server-side."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from optimodel_localcluster import gateway_api, go_modules
from optimodel_localcluster.paths import GoBuildError, LocalClusterError


def crd(plural: str) -> str:
    return (f"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
            f"metadata:\n  name: {plural}.gateway.networking.k8s.io\n")


POLICY = ("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: p}\n"
          "---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n"
          "metadata: {name: p}\n")


def module_tree(root: Path) -> Path:
    """A stand-in for the extracted module: standard and experimental channels, and a kustomization."""
    standard = root / "config/crd/standard"
    standard.mkdir(parents=True)
    (standard / "gateway.networking.k8s.io_vap_safeupgrades.yaml").write_text(POLICY)
    (standard / "gateway.networking.k8s.io_httproutes.yaml").write_text(crd("httproutes"))
    (standard / "gateway.networking.k8s.io_gateways.yaml").write_text(crd("gateways"))
    (standard / "README.md").write_text("not a manifest")
    experimental = root / "config/crd/experimental"
    experimental.mkdir(parents=True)
    (experimental / "gateway.networking.k8s.io_xmeshes.yaml").write_text(crd("xmeshes"))
    (root / "config/crd/kustomization.yaml").write_text("resources: []\n")
    return root


def test_crds_come_first_then_the_admission_policy_and_nothing_but_yaml(tmp_path: Path) -> None:
    planned = gateway_api.manifest_files(module_tree(tmp_path) / gateway_api.CHANNEL_DIR)
    assert [(path.name, names) for path, names in planned] == [
        ("gateway.networking.k8s.io_gateways.yaml", ["gateways.gateway.networking.k8s.io"]),
        ("gateway.networking.k8s.io_httproutes.yaml", ["httproutes.gateway.networking.k8s.io"]),
        ("gateway.networking.k8s.io_vap_safeupgrades.yaml", []),
    ]


def test_crd_names_reads_every_document() -> None:
    text = crd("a") + "---\n" + crd("b") + "---\n" + POLICY + "---\n"
    assert gateway_api.crd_names(text) == ["a.gateway.networking.k8s.io", "b.gateway.networking.k8s.io"]


@pytest.mark.parametrize(("goproxy", "expected"), [
    ("https://proxy.golang.org,direct", "https://proxy.golang.org"),
    ("direct", ""),
    ("off", ""),
    ("direct|https://a.example|https://b.example,direct", "https://a.example|https://b.example"),
    ("https://a.example,https://b.example", "https://a.example,https://b.example"),
])
def test_only_module_proxies_are_asked_never_the_vcs_host(goproxy: str, expected: str) -> None:
    assert gateway_api.proxy_only(goproxy) == expected


def test_first_fetch_copies_the_standard_channel_and_later_ones_need_no_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMODEL_CACHE", str(tmp_path / "cache"))
    module = module_tree(tmp_path / "module")
    downloads: list[str] = []

    def download(version: str) -> tuple[Path, dict]:
        downloads.append(version)
        return module, {"Path": gateway_api.MODULE, "Version": version, "Sum": "h1:x="}

    monkeypatch.setattr(gateway_api, "_download", download)
    said: list[str] = []
    folder = gateway_api.fetch("v9.9.9", said.append)
    assert folder == tmp_path / "cache/gateway-api/v9.9.9"
    assert sorted(p.name for p in folder.glob("*.yaml")) == [
        "gateway.networking.k8s.io_gateways.yaml", "gateway.networking.k8s.io_httproutes.yaml",
        "gateway.networking.k8s.io_vap_safeupgrades.yaml",
    ]
    assert json.loads((folder / ".fetched-from.json").read_text())["Sum"] == "h1:x="
    assert not (folder.with_name("v9.9.9.partial")).exists()
    assert downloads == ["v9.9.9"] and "Go module proxy" in said[0]

    # Cached: neither the download nor `go` is needed again.
    monkeypatch.setattr(gateway_api, "_download", lambda version: pytest.fail("downloaded again"))
    monkeypatch.setattr(go_modules.shutil, "which", lambda name: None)
    said.clear()
    assert gateway_api.fetch("v9.9.9", said.append) == folder and said == []


def test_a_module_without_standard_crds_is_an_error_and_caches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMODEL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "module").mkdir()
    monkeypatch.setattr(gateway_api, "_download", lambda version: (tmp_path / "module", {}))
    with pytest.raises(LocalClusterError, match="no CRD manifests"):
        gateway_api.fetch("v9.9.9")
    assert not gateway_api.manifests_dir("v9.9.9").exists()


def test_without_go_the_first_fetch_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIMODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(go_modules.shutil, "which", lambda name: None)
    with pytest.raises(GoBuildError, match="`go` is not on PATH"):
        gateway_api.fetch("v9.9.9")


def test_install_applies_server_side_and_waits_for_every_crd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIMODEL_CACHE", str(tmp_path / "cache"))
    module = module_tree(tmp_path / "module")
    monkeypatch.setattr(gateway_api, "_download", lambda version: (module, {}))
    calls: list[tuple[str, ...]] = []

    def kubectl(*args: str, timeout: float = 0) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, "", "")

    names = gateway_api.install(kubectl, "v9.9.9", timeout=42)
    assert names == ["gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io"]
    apply, wait = calls
    assert apply[:2] == ("apply", "--server-side")
    files = [Path(apply[i + 1]).name for i, arg in enumerate(apply) if arg == "-f"]
    assert files[-1] == "gateway.networking.k8s.io_vap_safeupgrades.yaml" and len(files) == 3
    assert wait == ("wait", "--for=condition=Established", "--timeout=42s",
                    "crd/gateways.gateway.networking.k8s.io", "crd/httproutes.gateway.networking.k8s.io")
