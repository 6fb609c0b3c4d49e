"""Only what pyproject.toml cannot say: the wheel carries the top-level ``migrations/`` and
``feature_repo/`` inside the package (``freshrec/_bundled/``), so an installed freshrec can migrate
its database and apply its Feast repository without the source checkout. An editable install reads
them from the checkout instead (``freshrec.resources``)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("migrations", "feature_repo")


class BuildWithBundles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for name in BUNDLED:
            shutil.copytree(root / name, Path(self.build_lib, "freshrec", "_bundled", name), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "data"))


setup(cmdclass={"build_py": BuildWithBundles})
