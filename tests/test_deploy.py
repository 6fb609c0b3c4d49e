"""Parse every deployment manifest and check it against the code: probe paths are real routes,
commands are real CLI verbs, the GPU is asked for, and the torch pin matches pyproject.toml."""
import re
import shlex
from pathlib import Path

import pytest
import yaml

from freshrec.cli import app as cli
from freshrec.config import Settings
from freshrec.serving import create_app

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.fixture(scope="module")
def routes():
    app = create_app(Settings(database_url="postgresql://nobody@localhost:1/none"), watch=False)
    return set(app.openapi()["paths"])


def _verbs() -> set[str]:
    import typer.main

    group = typer.main.get_command(cli)
    return {f"{name} {sub}" for name, cmd in group.commands.items() for sub in getattr(cmd, "commands", {}) or [""]}


def _freshrec_calls(text: str) -> list[str]:
    """Each `freshrec VERB [SUB]` in a shell string, as 'VERB SUB' or 'VERB '."""
    calls = []
    for part in re.split(r"&&|;|\|\|", text):
        words = shlex.split(part)
        if words and words[0] == "freshrec":
            calls.append(" ".join(words[1:3]))
    return calls


def _check_calls(text: str) -> None:
    verbs = _verbs()
    for call in _freshrec_calls(text):
        assert any(call.startswith(v.strip()) for v in verbs), f"{call!r} is not a freshrec command"


def _k8s_docs():
    return [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_compose_services_wiring_and_commands(routes):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "api", "updater"}
    assert "pgvector" in services["db"]["image"] and services["db"]["healthcheck"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "updater"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["FRESHREC_DATABASE_URL"].startswith("postgresql://")
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"]) and "/readyz" in routes
    assert services["api"]["command"][0] == "serve"
    for name in ("migrate", "updater"):
        _check_calls(services[name]["entrypoint"][-1])
    assert "freshrec update --watch" in services["updater"]["entrypoint"][-1]


def test_k8s_manifests(routes):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}
    assert {("Deployment", "freshrec-api"), ("Service", "freshrec-api"), ("CronJob", "freshrec-updater"),
            ("Job", "freshrec-migrate"), ("ConfigMap", "freshrec"), ("PersistentVolumeClaim", "freshrec-artifacts")} <= set(docs)

    api = docs[("Deployment", "freshrec-api")]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert api["spec"]["selector"]["matchLabels"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes
    assert container["args"][0] == "serve"
    service = docs[("Service", "freshrec-api")]
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()

    cron = docs[("CronJob", "freshrec-updater")]
    job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["resources"]["limits"]["nvidia.com/gpu"] == 1 and cron["spec"]["concurrencyPolicy"] == "Forbid"
    _check_calls(job["command"][-1])
    assert "--device cuda" in job["command"][-1]
    _check_calls(docs[("Job", "freshrec-migrate")]["spec"]["template"]["spec"]["containers"][0]["command"][-1])

    # The CPU head updater is a watcher: one replica, never two during a rollout, time to publish on SIGTERM.
    watcher = docs[("Deployment", "freshrec-watcher")]
    pod = watcher["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert watcher["spec"]["replicas"] == 1 and watcher["spec"]["strategy"]["type"] == "Recreate"
    assert args[:2] == ["update", "--watch"] and pod["terminationGracePeriodSeconds"] >= 300
    _check_calls("freshrec " + " ".join(args))

    config = docs[("ConfigMap", "freshrec")]["data"]
    known = set(Settings.model_fields) | {f"serving__{f}" for f in Settings.model_fields["serving"].annotation.model_fields}
    for key in config:
        assert key.startswith("FRESHREC_") and key.removeprefix("FRESHREC_").lower() in known, key


def test_dockerfile_pins_torch_like_pyproject():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    pin = re.search(r'"torch==([\d.]+)"', pyproject).group(1)
    assert f"torch=={pin}" in dockerfile
    assert re.search(r'^ENTRYPOINT \["freshrec"\]', dockerfile, re.M)
    for path in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (DEPLOY.parent / path).exists(), path


def test_the_image_runs_in_production_unless_told_otherwise():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    env = dict(re.findall(r"(FRESHREC_\w+)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", dockerfile, re.M))))
    assert env["FRESHREC_ENVIRONMENT"] == "production"
    # ... where the development token is refused: the image cannot serve with the public one.
    with pytest.raises(ValueError):
        Settings(environment=env["FRESHREC_ENVIRONMENT"])
