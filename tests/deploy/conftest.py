"""What the deploy tests share: the manifests rendered once per session, per overlay (read only)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_deploy_module(name: str, path: Path):
    """deploy/*.py are scripts, not a package: loaded by path (and registered: dataclasses look it up)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every object of the dev and prod overlays, as `kubectl kustomize` renders them (skipped without kubectl)."""
    validate = load_deploy_module("crm_deploy_validate", ROOT / "deploy" / "k8s" / "validate.py")
    try:
        validate.kubectl()
    except validate.KubectlMissing as exc:
        pytest.skip(str(exc))
    return {overlay: validate.render(overlay) for overlay in ("dev", "prod")}
