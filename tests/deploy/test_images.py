"""What `make images-check` looks for inside each image follows what each service declares."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))  # deploy/ is a folder of scripts
import images


def test_only_a_service_that_depends_on_the_smtp_server_keeps_it_in_its_image() -> None:
    kept = {svc.name: {"aiosmtpd", "public"}.isdisjoint(images.build_only(svc)) for svc in images.SERVICES}
    assert kept == {"contacts": False, "sales": False, "service-desk": True, "messaging": False}
    assert all({"grpc_tools", "pip", "setuptools"} <= set(images.build_only(svc)) for svc in images.SERVICES)
