"""The wheel carries conf/*.yml as ``surveillance/conf`` (everything else is in pyproject.toml): a job that
runs from the installed wheel on a cluster's nodes has the base configuration without a checkout."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "surveillance" / "conf"
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted((Path(__file__).parent / "conf").glob("*.yml")):
            shutil.copy2(source, target / source.name)


setup(cmdclass={"build_py": BuildPyWithConf})
