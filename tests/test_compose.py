"""docker-compose.yml checked statically (no Docker engine here): pinned images, documented variables,
healthchecks on real routes, a seed command the CLI accepts. The same topology runs as processes in
test_topology.py."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from smart_app import create_app
from smart_app.cli import build_parser
from smart_app.config import PREFIX, setting_names

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PINNED_TAG = re.compile(r"^[\w.\-/]+(:[\w][\w.\-]*)?@sha256:[0-9a-f]{64}$|^[\w.\-/]+:(?!latest$)[\w][\w.\-]*$")
PINNED_GIT = re.compile(r"^https://[\w.\-/]+\.git#[0-9a-f]{40}$")


def routes() -> set[str]:
    return {rule.rule for rule in create_app({"SECRET_KEY": "x" * 32}).url_map.iter_rules()}


def healthcheck_urls() -> dict[str, str]:
    urls = {name: " ".join(svc["healthcheck"]["test"]) for name, svc in SERVICES.items() if "healthcheck" in svc}
    dockerfile = (ROOT / "Dockerfile").read_text()
    urls["Dockerfile"] = next(line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK"))
    return {name: m.group(0) for name, text in urls.items() if (m := re.search(r"http://[^'\" ]+", text))}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_runs_a_pinned_image_or_a_build_from_a_fixed_source(name):
    service = SERVICES[name]
    build = service.get("build")
    if build is not None:
        context = build if isinstance(build, str) else build["context"]
        assert context == "." or PINNED_GIT.match(context), f"{name}: build context {context!r} is not pinned"
    else:
        assert PINNED_TAG.match(service.get("image", "")), f"{name}: image {service.get('image')!r} is not pinned"
    if "image" in service:
        assert not service["image"].endswith(":latest") and ":" in service["image"]


def test_every_ldn_variable_compose_sets_is_read_by_the_app_and_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    names = {key for svc in SERVICES.values() for key in (svc.get("environment") or {}) if key.startswith(PREFIX)}

    assert names and {n[len(PREFIX):] for n in names} <= setting_names()
    undocumented = {n for n in names if f"`{n}`" not in readme and not re.search(rf"`[^`]*\b{n}\b[^`]*`", readme)}
    assert undocumented == set()


def test_every_healthcheck_points_at_a_real_route_of_the_app():
    known = routes()
    urls = healthcheck_urls()

    assert {"app", "Dockerfile"} <= set(urls)
    for name, url in urls.items():
        assert urlsplit(url).path in known, f"{name}: {url} is not a route of the app"
    assert urlsplit(urls["app"]).path == "/readyz" and urlsplit(urls["Dockerfile"]).path == "/healthz"


def test_the_seed_service_runs_ldn_app_load_into_hapi_and_the_app_waits_for_it():
    command = SERVICES["seed"]["command"]
    args = build_parser().parse_args(command[1:])

    assert command[0] == "ldn-app" and args.command == "load" and args.samples
    assert args.server == "http://hapi:8080/fhir" and args.wait > 0
    assert SERVICES["seed"]["restart"] == "no"
    assert SERVICES["app"]["depends_on"]["seed"]["condition"] == "service_completed_successfully"


def test_by_default_the_app_opens_the_compose_hapi_as_an_open_server_with_the_sample_prescriber():
    env = SERVICES["app"]["environment"]
    hapi = "http://hapi:8080/fhir"

    assert env["LDN_OPEN_SERVERS"].endswith(f"-{hapi}}}") and env["LDN_DEFAULT_ISS"].endswith(f"-{hapi}}}")
    assert env["LDN_OPEN_REQUESTER"].endswith("-Practitioner/ldn-sample-prescriber}")
    assert env["LDN_SESSION_STORE"].startswith("redis://redis:")


def test_the_smart_profile_adds_the_reference_launcher_in_front_of_hapi():
    launcher = SERVICES["smart-launcher"]

    assert launcher["profiles"] == ["smart"] and "smart-on-fhir/smart-launcher-v2" in launcher["build"]
    assert launcher["environment"]["FHIR_SERVER_R4"] == "http://hapi:8080/fhir"
    assert all("profiles" not in svc for name, svc in SERVICES.items() if name != "smart-launcher")
