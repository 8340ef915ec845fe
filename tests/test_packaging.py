"""The wheel carries the Lua scripts and the migrations; docker-compose.yml is well formed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("fedtrack_redis-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_ships_every_lua_script(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    sources = sorted(p.name for p in (ROOT / "scripts" / "lua").glob("*.lua"))
    assert sources, "no Lua scripts in scripts/lua"
    for name in sources:
        assert f"fedtrack_redis/lua/{name}" in names
        packaged = wheel.read(f"fedtrack_redis/lua/{name}").decode()
        assert packaged == (ROOT / "scripts" / "lua" / name).read_text()


def test_wheel_ships_migrations_and_type_marker(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "fedtrack_redis/py.typed" in names
    assert "fedtrack_redis/store/migrations/env.py" in names
    assert "fedtrack_redis/store/migrations/script.py.mako" in names
    versions = [n for n in names if n.startswith("fedtrack_redis/store/migrations/versions/")]
    assert any(n.endswith("0001_policy.py") for n in versions)


def test_every_lua_script_documents_its_keys_and_arguments() -> None:
    for path in (ROOT / "scripts" / "lua").glob("*.lua"):
        header = path.read_text().split("\n\n", 1)[0]
        assert "KEYS[1]" in header, path.name
        assert "Returns" in header or "returns" in header, path.name
        assert "Clock" in header or "clock" in header, path.name


def test_installed_package_loads_the_scripts() -> None:
    from fedtrack_redis.scripts import lua_source

    assert "policy_apply.lua" in lua_source("policy_apply")


def test_docker_compose_is_well_formed() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:15")
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        assert "healthcheck" in service or "depends_on" in service, name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}
    for name in ("flusher", "api", "workers", "migrate"):
        assert services[name]["build"] == "."
        environment = services[name]["environment"]
        assert environment["FEDTRACK_REDIS_URL"] == "redis://redis:6379/0"
        assert environment["FEDTRACK_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert services["api"]["command"][:1] == ["serve"]
    assert services["flusher"]["command"] == ["flusher"]
    assert (ROOT / "Dockerfile").read_text().count("fedtrack") >= 1
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        subprocess.run(
            [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], check=True
        )
