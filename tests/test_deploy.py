"""The deployment files a user starts from (deploy/): the Compose file as docker-compose reads it, the Kubernetes
manifests against the Kubernetes API schemas (kubernetes-validate, offline), and in both, what docs/cluster.md says
of them: which services there are, their ports and health probes, and that every koe setting they set is one koe
reads. Neither can run here (no Docker engine, no cluster), so this is what can be checked."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from koe.config import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KUBERNETES_VERSION = "1.30.0"
MAIN_PORT = 8000
SORA_PORT = 5890
DOORS = ("door-a", "door-b")


def _settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings a koe started with exactly these KOE_* variables would have (failing as koe would)."""
    for name in [name for name in os.environ if name.startswith("KOE_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no ./koe.toml
    return load_settings()


# --- compose.yaml ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml as docker-compose resolves it (`config`: schema check, anchors merged, variables filled)."""
    tool = shutil.which("docker-compose")
    assert tool is not None, "docker-compose not found: install Debian's docker-compose (make test does: APT_TEST)"
    env = {**os.environ, "KOE_API_KEY": "test-key", "KOE_PUBLIC_HOST": "koe.test"}
    result = subprocess.run(
        [tool, "-f", str(DEPLOY / "compose.yaml"), "config"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def test_compose_needs_the_api_key() -> None:
    tool = shutil.which("docker-compose")
    assert tool is not None
    env = {name: value for name, value in os.environ.items() if name != "KOE_API_KEY"}
    result = subprocess.run(
        [tool, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode != 0 and "set KOE_API_KEY" in result.stderr


def test_compose_has_redis_two_doors_sharing_it_and_a_model_node(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", *DOORS, "model"}
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    published = set()
    for name in DOORS:
        door = services[name]
        environment = door["environment"]
        assert environment["KOE_CLUSTER__REDIS_URL"] == "redis://redis:6379/0"
        assert environment["KOE_CLUSTER__NODE_ID"] == name
        for kind in ("STT", "TTS", "LLM"):  # every model on the model node
            assert environment[f"KOE_{kind}__BACKEND"] == "remote"
            assert environment[f"KOE_{kind}__BASE_URL"] == f"http://model:{MAIN_PORT}/v1"
            assert environment[f"KOE_{kind}__API_KEY"] == "test-key"
        assert door["depends_on"]["redis"]["condition"] == "service_healthy"
        assert door["depends_on"]["model"]["condition"] == "service_healthy"  # the remote TTS asks it for its voices
        targets = {port["target"] for port in door["ports"]}
        assert targets == {MAIN_PORT, SORA_PORT}
        published |= {port["published"] for port in door["ports"]}
    assert len(published) == 4  # each door on host ports of its own
    model = services["model"]["environment"]
    assert "KOE_CLUSTER__REDIS_URL" not in model
    assert model["KOE_ACS__ENABLED"] == model["KOE_SORA__ENABLED"] == model["KOE_REALTIME__ENABLED"] == "false"
    for name in (*DOORS, "model"):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{MAIN_PORT}/healthz" in probe


@pytest.mark.parametrize("service", [*DOORS, "model"])
def test_every_koe_setting_in_compose_is_one_koe_reads(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environment = {k: str(v) for k, v in compose["services"][service]["environment"].items()}
    settings = _settings_from(environment, monkeypatch, tmp_path)
    assert [key.get_secret_value() for key in settings.server.api_keys] == ["test-key"]
    if service in DOORS:
        assert settings.cluster.redis_url is not None and settings.cluster.node_id == service
        assert settings.stt.backend == settings.tts.backend == settings.llm.backend == "remote"
        assert {settings.stt.base_url, settings.tts.base_url, settings.llm.base_url} == {f"http://model:{MAIN_PORT}/v1"}
        assert settings.stt.api_key is not None and settings.tts.api_key is not None and settings.sora.https
        assert settings.server.allowed_hosts == ["koe.test"]
    else:
        assert settings.cluster.redis_url is None and not settings.acs.enabled and not settings.sora.enabled
        assert not settings.realtime.enabled and settings.stt.backend == settings.tts.backend == "embedded"


# --- kubernetes/ ----------------------------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def _named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in _manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("manifest", _manifests(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_every_manifest_is_valid_against_the_kubernetes_schemas(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", ["koe-door", "koe-model", "koe-redis"])
def test_each_service_reaches_its_deployments_named_ports(name: str) -> None:
    deployment, service = _named("Deployment", name), _named("Service", name)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports


@pytest.mark.parametrize("name", ["koe-door", "koe-model"])
def test_koe_pods_are_probed_on_healthz(name: str) -> None:
    (container,) = _named("Deployment", name)["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == MAIN_PORT
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_the_doors_share_redis_each_under_its_pod_name_and_route_without_affinity(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deployment = _named("Deployment", "koe-door")
    assert deployment["spec"]["replicas"] >= 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {
        "http": MAIN_PORT,
        "sora": SORA_PORT,
    }
    env = {item["name"]: item for item in container["env"]}
    assert env["KOE_CLUSTER__NODE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    redis_service = _named("Service", "koe-redis")
    (redis_port,) = redis_service["spec"]["ports"]
    assert env["KOE_CLUSTER__REDIS_URL"]["value"] == f"redis://koe-redis:{redis_port['port']}/0"
    for kind in ("STT", "TTS", "LLM"):  # every model on koe-model, through its Service
        assert env[f"KOE_{kind}__BACKEND"]["value"] == "remote"
        assert env[f"KOE_{kind}__BASE_URL"]["value"] == f"http://koe-model:{MAIN_PORT}/v1"
    assert _named("Service", "koe-door")["spec"]["sessionAffinity"] == "None"
    # every variable is a koe setting that parses: secrets take the example Secret's values
    secret = _named("Secret", "koe")["stringData"]
    values = {"metadata.name": "koe-door-0"}
    environment = {}
    for name, item in env.items():
        if "value" in item:
            environment[name] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            environment[name] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            environment[name] = values[item["valueFrom"]["fieldRef"]["fieldPath"]]
    settings = _settings_from(environment, monkeypatch, tmp_path)
    assert settings.cluster.node_id == "koe-door-0" and settings.acs.connection_string is not None
    assert settings.stt.api_key is not None and settings.tts.api_key is not None


def test_the_model_node_serves_only_the_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (container,) = _named("Deployment", "koe-model")["spec"]["template"]["spec"]["containers"]
    environment = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    settings = _settings_from(environment, monkeypatch, tmp_path)
    assert not (settings.acs.enabled or settings.sora.enabled or settings.realtime.enabled)
    assert settings.api.enabled and settings.stt.backend == "embedded" and settings.stt.language == "auto"


def test_the_dockerfile_serves_the_ports_and_probe_the_manifests_use() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert f"EXPOSE {MAIN_PORT} {SORA_PORT}" in text
    assert f"http://127.0.0.1:{MAIN_PORT}/healthz" in text
    assert "uv sync --locked" in text
