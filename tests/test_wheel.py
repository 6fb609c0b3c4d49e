"""`pip install` without `-e`: the wheel carries its data set, its migrations and its Feast repository.

The wheel is built from the checkout and installed into a fresh virtualenv (its dependencies taken
from the test environment's site-packages, so nothing is downloaded but the build backend), then
used from a folder outside the checkout: `freshrec db upgrade`, a load of the bundled data, and the
plain `feast apply` on the repository the wheel installed.
"""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd, env, timeout=600):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_") and k != "VIRTUAL_ENV"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheels"), str(REPO)],
         tmp_path, env)
    wheel = next((tmp_path / "wheels").glob("freshrec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("freshrec/datasets/online_retail.parquet", "freshrec/datasets/SOURCE.md",
                    "freshrec/_bundled/migrations/env.py", "freshrec/_bundled/feature_repo/feature_store.yaml",
                    "freshrec/_bundled/feature_repo/feature_views.py"):
        assert shipped in names, shipped
    assert any(n.startswith("freshrec/_bundled/migrations/versions/") and n.endswith(".py") for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # The dependencies (torch, Feast, ...) from this environment; freshrec itself only from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], tmp_path, env)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**env, "FRESHREC_HOME": str(tmp_path / "home"), "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    try:
        where = _run(["python", "-c", "import freshrec, freshrec.resources as r; "
                                      "print(freshrec.__file__); print(r.bundled('feature_repo'))"], outside, env)
        assert str(REPO) not in where and "site-packages" in where
        _run(["freshrec", "db", "upgrade"], outside, env)
        loaded = _run(["freshrec", "load", "online-retail", "--until", "2010-12-02"], outside, env)
        assert "interactions_inserted" in loaded
        applied = _run(["bash", "-c", 'eval "$(freshrec env)" && python -m feast.cli.cli -c "$FRESHREC_FEATURE_REPO" apply '
                                      '&& psql -Atc "select count(*) from feast_registry.feature_views"'], outside, env)
        assert applied.strip().splitlines()[-1] == "4"
    finally:
        subprocess.run(["freshrec", "db", "stop"], cwd=outside, env=env, capture_output=True, timeout=60)
