"""docker-compose.yml and deploy/Dockerfile: valid, and every hardening rule, read from
the files themselves."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.generate_secrets import SECRET_FILES
from deploy.rotate import secret_files
from tests.support import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# Services that run once and exit: not restarted, no healthcheck to wait on.
ONE_SHOT = {"db-grants", "backup"}
# Commands each image already has, so a healthcheck needs nothing installed.
HEALTHCHECK_TOOLS = {"python", "pg_isready", "redis-cli", "wget"}
INTERNAL_ONLY = {"postgres", "redis", "auth", "media"}
APP_SERVICES = ("auth", "media", "gateway")
# The other containers' secrets, each for a reason: PostgreSQL's entrypoint sets the
# superuser password and 10-roles.sh creates every service role with its own; db-grants
# connects as the superuser; the backup reads as the superuser, encrypts to the recipient
# and signs with the signing key, and restores check the signature with the verify key
# and load as the restore role (README: "Backups").
OTHER_SECRETS = {
    "postgres": {"postgres_password", "db_auth_password", "db_media_password",
                 "db_gateway_password", "db_restore_password"},
    "db-grants": {"postgres_password"},
    "backup": {"postgres_password", "backup_recipient", "backup_signing_key",
               "backup_verify_key", "db_restore_password"},
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services(compose: dict):
    return sorted(compose["services"].items())


def test_compose_file_follows_the_compose_specification():
    tool = shutil.which("check-jsonschema", path=str(ROOT / ".venv" / "bin")) or \
        shutil.which("check-jsonschema")
    command = [tool] if tool else [sys.executable, "-m", "check_jsonschema"]
    result = subprocess.run([*command, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_specification_check_catches_a_wrong_file(tmp_path):
    # Proves the check above can fail.
    wrong = tmp_path / "compose.yml"
    wrong.write_text(COMPOSE.read_text().replace("read_only: true", "read_only: maybe", 1)
                     .replace("  postgres:\n", "  postgres:\n    no_such_key: 1\n", 1))
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                             "vendor.compose-spec", str(wrong)], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0


def test_the_compose_file_has_the_whole_stack(compose):
    assert {"postgres", "redis", "auth", "media", "gateway", "nginx"} <= set(compose["services"])


def test_every_image_is_pinned_to_a_version(compose):
    for name, service in services(compose):
        image = service.get("image")
        assert image, f"{name} has no image name"
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} not pinned"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} not pinned"


def test_every_container_runs_as_a_non_root_user(compose):
    for name, service in services(compose):
        user = str(service.get("user", ""))
        assert user, f"{name} does not say which user it runs as"
        assert user.split(":")[0] not in {"0", "root"}, name


def test_every_container_has_a_read_only_root_with_a_tmpfs_for_tmp(compose):
    for name, service in services(compose):
        assert service.get("read_only") is True, name
        mounts = [entry.split(":")[0] for entry in service.get("tmpfs", [])]
        assert "/tmp" in mounts, name


def test_every_container_drops_all_capabilities_and_adds_none_back(compose):
    for name, service in services(compose):
        assert service.get("cap_drop") == ["ALL"], name
        assert not service.get("cap_add"), f"{name} adds capabilities back"
        assert service.get("privileged") is not True, name


def test_every_container_forbids_new_privileges(compose):
    for name, service in services(compose):
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_every_container_has_memory_cpu_and_pids_limits(compose):
    for name, service in services(compose):
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"memory", "cpus", "pids"} <= set(limits), f"{name}: {limits}"


def test_every_long_running_container_has_a_healthcheck_needing_no_extra_package(compose):
    for name, service in services(compose):
        check = service.get("healthcheck", {})
        if name in ONE_SHOT:
            continue
        assert not check.get("disable"), name
        test = check.get("test")
        assert isinstance(test, list), name
        assert test[0] in {"CMD", "CMD-SHELL"}, name
        assert test[1] in HEALTHCHECK_TOOLS, f"{name}: {test[1]}"


def test_every_container_rotates_its_logs(compose):
    for name, service in services(compose):
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert {"max-size", "max-file"} <= set(logging.get("options", {})), name


def test_every_long_running_container_restarts_unless_stopped(compose):
    for name, service in services(compose):
        expected = "no" if name in ONE_SHOT else "unless-stopped"
        assert service.get("restart") == expected, name


def test_only_nginx_publishes_ports_and_only_80_and_443(compose):
    for name, service in services(compose):
        ports = service.get("ports", [])
        if name == "nginx":
            published = sorted(str(port).split(":")[0] for port in ports)
            assert published == ["443", "80"]
        else:
            assert not ports, f"{name} publishes {ports}"
        assert not service.get("network_mode"), name


def test_nothing_publishes_or_exposes_postgres_port(compose):
    text = COMPOSE.read_text()
    assert not re.search(r"[\"' -]5432:", text)
    for _name, service in services(compose):
        assert "5432" not in [str(port) for port in service.get("expose", [])]


def test_backend_services_sit_only_on_internal_networks(compose):
    networks = compose["networks"]
    for name in INTERNAL_ONLY:
        joined = compose["services"][name]["networks"]
        joined = list(joined) if isinstance(joined, dict) else joined
        for network in joined:
            assert networks[network].get("internal") is True, (name, network)
    assert set(compose["services"]["nginx"]["networks"]) == {"edge"}


def test_redis_is_reachable_only_from_the_gateway(compose):
    on_cache = sorted(name for name, service in services(compose)
                      if "cache" in service.get("networks", []))
    assert on_cache == ["gateway", "redis"]


def test_secrets_are_files_never_values_in_the_compose_file(compose):
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, name
        assert secret["file"].startswith("./deploy/secrets/"), name
    # git ignores the generated secrets.
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/secrets/jwt_key"], cwd=ROOT,
                             check=False)
    assert ignored.returncode == 0
    for name, service in services(compose):
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search(r"(SecretKey|Password|SecretKeys)$", key):
                raise AssertionError(f"{name}: {key} set directly; use {key}_FILE")
            if key.endswith("_FILE") and value:
                secret = value.removeprefix("/run/secrets/")
                assert value.startswith("/run/secrets/"), (name, key)
                assert secret in service.get("secrets", []), (name, key)
        assert urlsplit(str(env.get("Database__Url", ""))).password is None, name


def test_each_service_gets_only_its_own_database_password(compose):
    for name in ("auth", "media", "gateway"):
        secrets = compose["services"][name]["secrets"]
        assert [s for s in secrets if s.startswith("db_")] == [f"db_{name}_password"]
        assert "postgres_password" not in secrets


def test_each_service_mounts_exactly_the_secrets_it_reads(compose):
    for name in APP_SERVICES:
        service = compose["services"][name]
        expected = secret_files(name)
        assert sorted(service["secrets"]) == sorted(expected.values()), name
        given = {key.removesuffix("_FILE"): str(value).removeprefix("/run/secrets/")
                 for key, value in service["environment"].items() if key.endswith("_FILE")}
        assert given == expected, name
    for name, expected_files in OTHER_SECRETS.items():
        assert set(compose["services"][name].get("secrets", [])) == expected_files, name
    with_secrets = {name for name, service in services(compose) if service.get("secrets")}
    assert with_secrets == {*APP_SERVICES, *OTHER_SECRETS}


def test_every_generated_secret_is_one_a_container_reads(compose):
    # Redis takes no password (only the gateway's network reaches it): none is generated.
    mounted = {secret for _, service in services(compose) for secret in service.get("secrets", [])}
    assert set(SECRET_FILES) <= mounted


def test_media_is_given_no_users_token_key(compose):
    media = compose["services"]["media"]
    assert not {"jwt_key", "jwt_previous_keys"} & set(media["secrets"])
    assert not [key for key in media["environment"] if key.startswith("JWT__")]


def test_postgres_superuser_password_is_a_generated_secret(compose):
    env = compose["services"]["postgres"]["environment"]
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in env
    assert env.get("POSTGRES_HOST_AUTH_METHOD") != "trust"


def test_production_settings_in_compose(compose):
    for name in ("auth", "media", "gateway"):
        env = compose["services"][name]["environment"]
        assert env["App__Environment"] == "production", name
    assert compose["services"]["auth"]["environment"]["Auth__CookieSecure"] == "true"
    assert "*" not in compose["services"]["gateway"]["environment"]["CORS__AllowedOrigins"]


def dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1))
    assert len(dockerfile_stages()) >= 2


def test_dockerfile_final_image_has_no_compiler_and_a_non_root_user():
    runtime = next(stage for stage in dockerfile_stages() if " AS runtime" in stage[0])
    body = "\n".join(runtime)
    assert "build-essential" not in body
    assert "gcc" not in body
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    for stage in dockerfile_stages():
        users = [line.split()[1] for line in stage if line.startswith("USER ")]
        if users:
            assert users[-1].split(":")[0] not in {"0", "root"}, stage[0]


def test_every_reference_in_the_compose_file_resolves(compose):
    # What `docker compose config` would refuse, checked without Docker.
    for name, service in services(compose):
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], (name, secret)
        networks = service.get("networks", [])
        for network in (networks if isinstance(networks, list) else list(networks)):
            assert network in compose["networks"], (name, network)
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], (name, dependency)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                if source in {"./var/backups", "./deploy/nginx/certs"}:
                    continue  # made by the operator (README, production deployment)
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)


def test_bind_mounted_scripts_are_executable_shell(compose):
    for path in ("deploy/postgres/10-roles.sh", "deploy/postgres/grant-gateway.sh",
                 "deploy/nginx/install-cert.sh"):
        script = ROOT / path
        assert script.read_text().startswith("#!/bin/sh\n"), path
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0, path
