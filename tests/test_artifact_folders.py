"""Artifact folders: two servers whose databases share a name never sweep each other's versions, and a
version recorded under another spelling of its location is not an orphan."""
import psycopg
import pytest
import sqlalchemy as sa

from freshrec.registry.artifacts import database_folder, sweep_orphans

SYSTEM = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def test_databases_named_alike_on_two_servers_get_two_folders(server):
    try:
        psycopg.connect(SYSTEM.replace("+psycopg", ""), connect_timeout=3).close()
    except psycopg.OperationalError:
        pytest.skip("no system PostgreSQL on 127.0.0.1:5432")
    embedded = sa.create_engine(f"postgresql+psycopg://postgres@/postgres?host={server.socket_dir}")
    system = sa.create_engine(SYSTEM)
    with embedded.connect() as a, system.connect() as b:
        folders = [database_folder(a, "/root/artifacts"), database_folder(b, "/root/artifacts/")]
    assert all(f.endswith("-postgres") and f.startswith("/root/artifacts/") for f in folders)
    assert folders[0] != folders[1]  # by current_database() alone, both were /root/artifacts/postgres
    embedded.dispose()
    system.dispose()


def test_a_version_spelled_differently_is_not_an_orphan(tmp_path):
    folder = tmp_path / "7713-freshrec"
    for name in ("live-a", "live-b", "live-c", "orphan"):
        (folder / name).mkdir(parents=True)
        (folder / name / "manifest.json").write_text("{}")
    referenced = {f"file://{folder}/live-a", f"{folder}/live-b/", f"{folder}/live-c"}
    removed = sweep_orphans(str(folder), referenced)
    assert [r.rsplit("/", 1)[-1] for r in removed] == ["orphan"]
    assert sorted(p.name for p in folder.iterdir()) == ["live-a", "live-b", "live-c"]
