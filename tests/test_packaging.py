"""The wheel carries the Lua scripts and the migrations; docker-compose.yml is well formed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
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


def test_wheel_ships_the_dashboard_and_its_stylesheet(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for name in ("dashboard.html", "dashboard.css"):
        assert f"fedtrack_redis/api/{name}" in names
        packaged = wheel.read(f"fedtrack_redis/api/{name}").decode()
        assert packaged == (ROOT / "src" / "fedtrack_redis" / "api" / name).read_text()


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
    # The token has no default: compose refuses to start without one, naming the rule.
    token = compose["x-fedtrack-env"]["FEDTRACK_ADMIN_TOKEN"]
    assert token == "${FEDTRACK_ADMIN_TOKEN:?set FEDTRACK_ADMIN_TOKEN (32+ characters)}"
    assert (ROOT / "Dockerfile").read_text().count("fedtrack") >= 1
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        config = [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"]
        env = {k: v for k, v in os.environ.items() if k != "FEDTRACK_ADMIN_TOKEN"}
        refused = subprocess.run(config, env=env, capture_output=True, text=True, check=False)
        assert refused.returncode != 0
        assert "set FEDTRACK_ADMIN_TOKEN" in refused.stderr
        env["FEDTRACK_ADMIN_TOKEN"] = "x" * 32
        subprocess.run(config, env=env, check=True)


# -- dependencies: what the code imports, and the extras it asks for ----------------------

#: Dependencies no module imports by name, and why they are still needed.
USED_WITHOUT_IMPORT = {
    "hiredis": "redis-py's reply parser, picked up when installed",
    "psycopg": "the driver of postgresql+psycopg:// URLs, loaded by SQLAlchemy",
}
IMPORT_NAMES = {"sqlalchemy": "sqlalchemy", "prometheus-client": "prometheus_client"}


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project: dict[str, object] = data["project"]
    return project


def _source() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "src" / "fedtrack_redis").rglob("*.py"))


def test_every_dependency_is_imported_or_explained() -> None:
    source = _source()
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list)
    for requirement in dependencies:
        name = re.split(r"[\[<>=~!; ]", requirement, maxsplit=1)[0].lower()
        if name in USED_WITHOUT_IMPORT:
            continue
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.MULTILINE), requirement


def test_the_redis_bound_matches_the_api_used() -> None:
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list)
    (redis_requirement,) = [r for r in dependencies if re.match(r"redis\b", r)]
    bound = tuple(int(n) for n in re.findall(r">=\s*([\d.]+)", redis_requirement)[0].split("."))
    if re.search(r"\.get_connection\(\)", _source()):  # no command name: redis-py 5.3+
        assert bound >= (5, 3), redis_requirement


def _run_blocked(blocked: list[str], args: list[str], path: str | None = None) -> tuple[int, str]:
    """Run the CLI's main with `blocked` modules made unimportable, as without the extra."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from fedtrack_redis.cli.main import main\n"
        f"main({args!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDTRACK_")}
    env["FEDTRACK_ADMIN_TOKEN"] = "packaging-test-token-0123456789abcdefg"
    if path is not None:
        env["PATH"] = path
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn"])
def test_serve_without_the_server_extra_says_which_to_install(missing: str) -> None:
    code, output = _run_blocked([missing], ["serve"])
    assert code == 2, output
    assert output.strip().splitlines() == [
        f"fedtrack: error: the admin API needs the 'server' extra ({missing} is not installed):"
        " pip install 'fedtrack-redis[server]'"
    ]


def test_demo_without_the_demo_extra_says_which_to_install(tmp_path: Path) -> None:
    code, output = _run_blocked(["fastapi"], ["demo", "--duration", "1"])
    assert code == 2, output
    assert "Traceback" not in output
    assert output.strip().splitlines() == [
        "fedtrack: error: the demo needs the 'demo' extra (fastapi is not installed):"
        " pip install 'fedtrack-redis[demo]'"
    ]
    # Without redis-server on PATH the demo needs fakeredis, which the demo extra brings.
    code, output = _run_blocked(["fakeredis"], ["demo", "--duration", "1"], path=str(tmp_path))
    assert code == 2, output
    assert output.strip().splitlines()[-1] == (
        "fedtrack: error: the demo needs the 'demo' extra (fakeredis is not installed):"
        " pip install 'fedtrack-redis[demo]'"
    )
    assert "Traceback" not in output


def test_the_cli_itself_needs_no_extra() -> None:
    code, output = _run_blocked(["fastapi", "uvicorn", "fakeredis"], ["--help"])
    assert code == 0, output
    assert "serve" in output
