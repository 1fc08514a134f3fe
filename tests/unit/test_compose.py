"""docker-compose.yml and deploy/, checked statically (no Docker engine runs on the build
machines): the files parse, every path, service and port they refer to exists, and every
metric the dashboard and the alert rules query is one streamproc exports. `promtool` and
`docker-compose`, where installed, check the rules and the compose file too."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamproc.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def binds(service: str) -> dict[str, Path]:
    """A service's bind mounts: container path -> host path (which must exist)."""
    out = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def host_path(service: str, container_path: str) -> Path:
    """Where a path inside a service's container comes from on this side."""
    wanted = PurePosixPath(container_path)
    for target, source in binds(service).items():
        if wanted == PurePosixPath(target) or PurePosixPath(target) in wanted.parents:
            return source / wanted.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted into {service}")


def test_the_production_stack_has_its_services() -> None:
    services = compose()["services"]
    assert set(services) == {
        "kafka",
        "topics",
        "postgres",
        "worker",
        "generator",
        "prometheus",
        "grafana",
    }
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_workers_run_the_faust_app_on_an_existing_config() -> None:
    worker = compose()["services"]["worker"]
    assert worker["command"][:4] == ["faust", "-A", "agents.app", "worker"]
    config = worker["environment"]["STREAMPROC_CONFIG"].removeprefix("/app/")
    assert (ROOT / config).is_file()
    assert set(worker["depends_on"]) == {"kafka", "postgres", "topics"}
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_the_generator_produces_for_the_workers_config_with_wall_clock_event_time() -> None:
    services = compose()["services"]
    generator = services["generator"]
    command = generator["command"]
    assert command[:3] == ["python", "-m", "streamproc.demo.produce"]
    assert command[3] == services["worker"]["environment"]["STREAMPROC_CONFIG"]
    assert "--realtime" in command
    assert generator["environment"]["STREAMPROC_KAFKA_BOOTSTRAP"] == "kafka:29092"


def test_the_topic_step_creates_the_workers_source_topic() -> None:
    services = compose()["services"]
    config = services["worker"]["environment"]["STREAMPROC_CONFIG"].removeprefix("/app/")
    topic = json.loads((ROOT / config).read_text())["extract"]["connectionParams"]["subscribe"]
    command = services["topics"]["command"]
    assert command[command.index("--topic") + 1] == topic
    assert "--if-not-exists" in command


def test_every_dependency_and_mounted_path_exists() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", ())) <= set(services), name
        for target, source in binds(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target})"


def test_long_running_services_restart() -> None:
    for name, service in compose()["services"].items():
        if name != "topics":  # a one-shot step
            assert service.get("restart") == "unless-stopped", name


def test_kafka_is_reachable_from_the_containers_and_from_the_host() -> None:
    services = compose()["services"]
    env = services["kafka"]["environment"]
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(advertised) == {"INTERNAL", "HOST"}
    assert services["worker"]["environment"]["STREAMPROC_KAFKA_BOOTSTRAP"] == advertised["INTERNAL"]
    host_port = advertised["HOST"].rsplit(":", 1)[1]
    assert f"{host_port}:{host_port}" in services["kafka"]["ports"]
    assert advertised["HOST"].startswith("${KAFKA_HOST_NAME:-localhost}:")
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"


def test_env_example_sets_every_variable_the_compose_file_uses() -> None:
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    lines = (ROOT / ".env.example").read_text().splitlines()
    given = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert used <= given
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_prometheus_scrapes_the_workers_metrics_port() -> None:
    worker = compose()["services"]["worker"]
    port = int(worker["environment"]["STREAMPROC_METRICS_PORT"])
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["dns_sd_configs"][0]["port"] == port


def test_no_secret_is_written_in_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"PASSWORD\s*:", line) or ("://" in line and "@" in line):
            assert "${" in line, line


def dockerfile_copies() -> list[str]:
    return [
        source
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]


def test_the_dockerfile_copies_what_exists() -> None:
    for source in dockerfile_copies():
        assert (ROOT / source).exists(), source


def test_the_image_has_what_building_the_package_reads() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", project["readme"], *project["license-files"], "streamproc"}
    assert needed <= set(dockerfile_copies())


def test_prometheus_loads_the_alert_rules_it_is_given() -> None:
    prometheus = load_yaml(DEPLOY / "prometheus.yml")
    for rule_file in prometheus["rule_files"]:
        path = host_path("prometheus", str(PurePosixPath("/etc/prometheus") / rule_file))
        assert load_yaml(path)["groups"]


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    services = compose()["services"]
    assert host_path("grafana", "/etc/grafana/provisioning") == PROVISIONING
    (source,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    url = re.fullmatch(r"http://(\w+):(\d+)", source["url"])
    assert url is not None and url.group(1) in services
    assert f"{url.group(2)}:{url.group(2)}" in services[url.group(1)]["ports"]
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "streamproc.yml")["providers"]
    assert host_path("grafana", provider["options"]["path"]) == DASHBOARD.parent
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}


def test_the_dashboard_shows_what_an_operator_asks_for() -> None:
    exprs = "\n".join(dashboard_exprs())
    for metric in (
        "streamproc_records_total",  # throughput, late and bad ratio
        "streamproc_consumer_lag_records",
        "streamproc_global_watermark_timestamp_seconds",
        "streamproc_batch_duration_seconds_bucket",
        "streamproc_phase_duration_seconds_sum",
        "streamproc_circuit_breaker_open",
    ):
        assert metric in exprs, metric
    assert "time() - max by (query) (streamproc_global_watermark_timestamp_seconds" in exprs


def test_the_alert_rules_cover_lag_progress_breaker_late_and_failures() -> None:
    alerts = {rule["alert"] for rule in alert_rules()}
    assert {
        "StreamprocLagGrowing",
        "StreamprocNoProgress",
        "StreamprocCircuitBreakerOpen",
        "StreamprocLateRatioHigh",
        "StreamprocFailedBatches",
    } <= alerts


def exported_metrics() -> set[str]:
    """Every series name streamproc's registry serves, from its registrations."""
    from prometheus_client import REGISTRY

    import streamproc.runtime.metrics  # noqa: F401  (registers the metrics)

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names = set()
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def dashboard_exprs() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        yield variable["definition"]


def alert_rules() -> Iterator[dict[str, Any]]:
    for group in load_yaml(DEPLOY / "alerts.yml")["groups"]:
        yield from group["rules"]


def test_every_metric_queried_is_one_streamproc_exports() -> None:
    exported = exported_metrics()
    assert "streamproc_consumer_lag_records" in exported  # the registrations were read
    queried = [*dashboard_exprs(), *(rule["expr"] for rule in alert_rules())]
    names = {name for expr in queried for name in re.findall(r"\bstreamproc_\w+", expr)}
    assert names
    assert names <= exported, sorted(names - exported)


def test_promtool_accepts_the_rules_and_the_config() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (apt-get install prometheus provides it)")
    for args in (("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml")):
        done = subprocess.run(
            ["promtool", *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_docker_compose_accepts_the_file() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose provides it)")
    done = subprocess.run(
        ["docker-compose", "--env-file", ".env.example", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
