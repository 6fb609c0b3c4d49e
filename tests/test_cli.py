"""What a user types: the freshrec CLI, the plain feast CLI and psql, as subprocesses."""
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args, env=None, check=True, shell=False):
    full_env = {**os.environ, **(env or {}), "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(args, cwd=REPO, env=full_env, capture_output=True, text=True, shell=shell, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def db(module_db):
    return {"FRESHREC_DATABASE_URL": module_db}


def test_load_summary_then_feast_and_psql(db, retail_sample):
    out = run(["freshrec", "load", "online-retail", str(retail_sample), "--until", "2010-12-02"], db).stdout
    assert "interactions_inserted" in out
    again = run(["freshrec", "load", "online-retail", str(retail_sample), "--until", "2010-12-02"], db).stdout
    assert "interactions_inserted: 0" in again.replace(" ", "").replace(":0", ": 0")

    script = (
        'eval "$(freshrec env)" && feast -c feature_repo apply && '
        'feast -c feature_repo materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)" && '
        'psql "$(freshrec db url)" -Atc "select count(*) from interactions" && '
        'psql -Atc "select count(*) from feast_registry.feature_views" && '
        'psql -Atc "select count(distinct entity_key) from feast_online.freshrec_user_text" && '
        'psql -Atc "select count(distinct entity_key) from feast_online.freshrec_item_stats"'
    )
    proc = run(["bash", "-c", script], db)
    counts = proc.stdout.strip().splitlines()[-4:]
    with psycopg.connect(db["FRESHREC_DATABASE_URL"]) as conn:
        expected = conn.execute("select count(*) from interactions").fetchone()[0]
        users = conn.execute("select count(distinct user_id) from user_profiles").fetchone()[0]
        items = conn.execute("select count(distinct item_id) from item_daily_stats").fetchone()[0]
    # The plain Feast CLI alone, on a fresh database, fills the online store: every profile, every item.
    assert counts == [str(expected), "4", str(users), str(items)] and users > 0 and items > 0


def test_bad_file_is_one_line_error_and_exit_2(db, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("InvoiceNo,StockCode,Quantity,InvoiceDate\n1,A,x,2011-01-01\n")
    proc = run(["freshrec", "load", "online-retail", str(bad)], db, check=False)
    assert proc.returncode == 2
    assert "column 'Quantity', row 1: 'x' is not an integer" in proc.stderr


def test_external_server_without_pgvector_is_named(tmp_path):
    system = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(system, connect_timeout=3).close()
    except psycopg.OperationalError:
        pytest.skip("no system PostgreSQL on 127.0.0.1:5432")
    proc = run(["freshrec", "db", "upgrade"], {"FRESHREC_DATABASE_URL": system}, check=False)
    assert proc.returncode == 1
    assert "has no pgvector extension" in proc.stderr


def test_db_status_and_url(db):
    assert run(["freshrec", "db", "url"], db).stdout.strip() == db["FRESHREC_DATABASE_URL"]
    assert "external" in run(["freshrec", "db", "status"], db).stdout


def test_embedded_server_status():
    """With no FRESHREC_DATABASE_URL, the embedded server under FRESHREC_HOME is used (started by the session)."""
    env = {k: v for k, v in os.environ.items() if k != "FRESHREC_DATABASE_URL"}
    env["PATH"] = f"{BIN}:{os.environ['PATH']}"
    proc = subprocess.run(["freshrec", "db", "status"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "running (pid" in proc.stdout


def test_demo_main_job_two_versions_and_a_second_run_makes_nothing(module_db, tiny_model):
    """The README's main job (tiny model, no server): v1 on 13 weeks, v2 on exactly the next week's rows."""
    db = {"FRESHREC_DATABASE_URL": module_db}
    out = run(["freshrec", "demo", "--base-model", tiny_model, "--no-serve", "--device", "cpu"], db).stdout
    assert "version 1: promoted" in out and "watermark of version 2:" in out and ": equal" in out
    # The demo ends with the API's answer for one customer, each item naming its candidate sources.
    shown = out.split("recommendations for customer 12347 (version 2):")[1].split("step timings")[0]
    assert "repeat" in shown and shown.count("\n") > 8
    again = run(["freshrec", "demo", "--base-model", tiny_model, "--no-serve", "--device", "cpu"], db).stdout
    assert again.count("no new rows past the watermark") == 2
    versions = run(["freshrec", "versions", "--json"], db).stdout
    import json

    rows = json.loads(versions)
    assert [(r["version"], r["parent"]) for r in rows] == [(1, None), (2, 1)]
