"""docker-compose.yml, checked statically (no Docker engine runs on the build machines)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_the_production_stack_has_its_services() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "postgres", "worker", "prometheus", "grafana"}
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_workers_run_the_faust_app_on_an_existing_config() -> None:
    worker = compose()["services"]["worker"]
    assert worker["command"][:4] == ["faust", "-A", "agents.app", "worker"]
    config = worker["environment"]["STREAMPROC_CONFIG"].removeprefix("/app/")
    assert (ROOT / config).is_file()
    assert set(worker["depends_on"]) == {"kafka", "postgres"}


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
