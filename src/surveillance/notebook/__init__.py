"""Databricks notebooks (``notebooks/``): the helpers they call and the shim that runs them on a laptop.

The notebooks use ``spark``, ``dbutils``, ``display`` and ``displayHTML`` as Databricks provides them;
:mod:`surveillance.notebook.runner` provides the same names locally (:mod:`surveillance.notebook.local`).
"""

from surveillance.notebook.params import split_overrides

__all__ = ["split_overrides"]
