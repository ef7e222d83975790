"""`make images` and `make images-check`: build each service's OCI image without a Docker engine.

    python deploy/images.py build [--prefix crm-] [--tag TAG] [SERVICE ...]
    python deploy/images.py check [--prefix crm-] [--tag TAG] [SERVICE ...]   build, inspect, smoke

buildah builds services/<name>/Dockerfile (RUN steps under chroot isolation: no daemon, no
OCI runtime, no cgroups needed), FROM a Python base made here from Debian packages with
mmdebstrap (Debian 12's python3 is 3.11, as python:3.11-slim, which no registry here serves).
`check` then looks inside each image (user 10001, no build-only tools) and starts its api
process against a local MongoDB stand-in, expecting 200 from /healthz.

Where a build host reaches PyPI through a TLS-inspecting proxy, its CA bundle (PIP_CERT, or
the system one) is mounted into the build's RUN steps only; it is not copied into an image.
Without buildah or mmdebstrap, `build` fails and `check` skips (exit 0), each saying why;
a Docker engine, where one answers, still builds with `docker build` (no check).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
from generate import SERVICES, UID, Svc  # noqa: E402 - deploy/ is a folder of scripts

BASE_IMAGE = "localhost/crm-python-base:3.11-bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# the runtime image has none of these (distribution: the folder it installs): code generation,
# the local SMTP sink and its helper, packaging; but what a service declares it depends on stays
BUILD_ONLY = {
    "grpcio-tools": ("grpc_tools",),
    "aiosmtpd": ("aiosmtpd", "public"),
    "pip": ("pip",),
    "setuptools": ("setuptools",),
}
BUILD_CA_IN_CONTAINER = "/run/crm-build-ca.crt"
SMOKE_SECONDS = 90.0  # the api answers in a few seconds; a slow shared machine gets much more
TOOLS_MISSING = "buildah and mmdebstrap build the images without a Docker engine: apt-get install -y buildah mmdebstrap"


class Failed(RuntimeError):
    pass


def run(argv: list[str], *, capture: bool = False, timeout: float | None = None) -> str:
    """Run a command; its output goes to ours unless captured. A failure names the command."""
    proc = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        detail = f":\n{proc.stderr.strip()}" if capture else ""
        raise Failed(f"`{' '.join(argv)}` exited with {proc.returncode}{detail}")
    return proc.stdout.strip() if capture else ""


def missing_tools() -> list[str]:
    """What keeps this machine from building: a tool not installed, or buildah not working here."""
    missing = [tool for tool in ("buildah", "mmdebstrap", "unshare") if shutil.which(tool) is None]
    if "buildah" not in missing:
        probe = subprocess.run(["buildah", "info"], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            missing.append(f"a working buildah (`buildah info` exited {probe.returncode}: {probe.stderr.strip()})")
    return missing


def docker_answers() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )


def image_exists(name: str) -> bool:
    return (
        subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True, check=False).returncode
        == 0
    )


@contextlib.contextmanager
def working_container(image: str) -> Iterator[str]:
    container = run(["buildah", "from", "--pull-never", image], capture=True).splitlines()[-1]
    try:
        yield container
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def build_base(rebuild: bool = False) -> None:
    """A Debian 12 root file system with Python 3.11 and venv, as the image every build starts FROM."""
    if image_exists(BASE_IMAGE) and not rebuild:
        print(f"images: {BASE_IMAGE} exists (make images REBUILD_BASE=1 makes it again)")
        return
    started = time.perf_counter()
    with working_container("scratch") as container:
        root = run(["buildah", "mount", container], capture=True)
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=" + ",".join(BASE_PACKAGES),
                *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")),
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "bookworm",
                root,
            ],
            timeout=900,
        )
        run(["buildah", "umount", container], capture=True)
        run(
            [
                "buildah",
                "config",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "python3",
                "--label",
                "org.opencontainers.image.description=Debian 12 with Python 3.11 (mmdebstrap)",
                container,
            ]
        )
        run(["buildah", "commit", "--quiet", container, BASE_IMAGE], capture=True)
    print(f"images: {BASE_IMAGE} made in {time.perf_counter() - started:.0f}s")


def build_ca() -> Path | None:
    """The CA bundle pip inside the build should trust: PIP_CERT, else the system bundle."""
    for candidate in (os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def image_name(svc: Svc, prefix: str, tag: str) -> str:
    return f"{prefix}{svc.name}:{tag}"


def build(svc: Svc, prefix: str, tag: str) -> None:
    started = time.perf_counter()
    argv = [
        "buildah",
        "bud",
        "--quiet",
        "--force-rm",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--layers",
        "--build-arg",
        f"PYTHON_IMAGE={BASE_IMAGE}",
        "-f",
        f"services/{svc.name}/Dockerfile",
        "-t",
        image_name(svc, prefix, tag),
    ]
    if (ca := build_ca()) is not None:
        argv += ["--build-arg", f"PIP_CERT={BUILD_CA_IN_CONTAINER}", "-v", f"{ca}:{BUILD_CA_IN_CONTAINER}:ro"]
    print("images: " + " ".join(argv), flush=True)
    subprocess.run([*argv, "."], cwd=ROOT, check=True, stdout=sys.stderr, timeout=1800)
    print(f"images: {image_name(svc, prefix, tag)} built in {time.perf_counter() - started:.0f}s")


def image_config(image: str) -> dict:
    """The image's OCI config (User, Cmd, Env, …)."""
    return json.loads(run(["buildah", "inspect", "--type", "image", image], capture=True))["OCIv1"]["config"]


def build_only(svc: Svc) -> list[str]:
    """The folders that must not be in svc's image: BUILD_ONLY's but its declared dependencies'
    (the service desk's support mailbox listens with aiosmtpd, as its Dockerfile keeps it)."""
    project = tomllib.loads((ROOT / "services" / svc.name / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[\s<>=!~\[;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    return [folder for dist, folders in BUILD_ONLY.items() if dist not in declared for folder in folders]


def inspect(svc: Svc, image: str) -> list[str]:
    """What must hold inside the image: the non-root user, the service's entrypoints, no build tools."""
    problems = []
    user = image_config(image).get("User")
    if user != f"{UID}:{UID}":
        problems.append(f"runs as {user!r}, not {UID}:{UID}")
    with working_container(image) as container:
        root = Path(run(["buildah", "mount", container], capture=True))
        try:
            site = next((root / "opt" / "crm" / "lib").glob("python3.*/site-packages"), None)
            if site is None:
                return [*problems, "no virtualenv at /opt/crm"]
            left = [name for name in build_only(svc) if (site / name).exists()]
            problems += [f"build-only {name} is in the image" for name in left]
            problems += [
                f"/opt/crm/bin/crm-{p} is missing"
                for p in ("api", "grpc", "worker")
                if not (root / "opt" / "crm" / "bin" / f"crm-{p}").exists()
            ]
            if not (site / f"crm_{svc.slug}").is_dir():
                problems.append(f"the {svc.name} package is not installed")
        finally:
            run(["buildah", "umount", container], capture=True)
    return problems


def get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def smoke(svc: Svc, image: str, workdir: Path) -> str | None:
    """Start the image's api (its default command) next to a MongoDB stand-in; None when
    /healthz answers 200, else what went wrong (with the end of its log)."""
    from crmkit import stack  # the project's virtualenv (make install): nx-27017 is the local MongoDB

    mongo_port, http_port = stack.free_port(), stack.free_port()
    mongo = stack.start_mongo(mongo_port, workdir / f"mongo-{svc.name}", workdir)
    env = {
        "CRM_ENV": "development",
        f"CRM_{svc.key}_HTTP_PORT": str(http_port),
        "CRM_MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}",
        "CRM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    }
    log_path = workdir / f"{svc.name}-api.log"
    # buildah run needs the command spelled out: the image's own default (crm-api)
    command = image_config(image)["Cmd"]
    status = None
    try:
        with working_container(image) as container, open(log_path, "w") as log:
            # its own PID namespace: when the run ends, every process the image started ends with it
            argv = [
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "buildah",
                "run",
                "--isolation",
                "chroot",
                "--network",
                "host",
                *(a for k, v in env.items() for a in ("--env", f"{k}={v}")),
                container,
                "--",
                *command,
            ]
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                deadline = time.monotonic() + SMOKE_SECONDS
                while status != 200 and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.5)
                    status = get(f"http://127.0.0.1:{http_port}/healthz")
            finally:
                with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
                    os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
    finally:
        stack.stop_process(mongo)
    if status == 200:
        return None
    tail = "\n    ".join(log_path.read_text(errors="replace").splitlines()[-15:])
    answer = f"answered {status}" if status else "got no answer"
    return (
        f"`{' '.join(command)}` in the image: GET /healthz {answer} within {SMOKE_SECONDS:.0f}s "
        f"(exit status {process.returncode}); the end of its log:\n    {tail}"
    )


def check(svc: Svc, image: str, workdir: Path) -> list[str]:
    started = time.perf_counter()
    problems = inspect(svc, image)
    if (failure := smoke(svc, image, workdir)) is not None:
        problems.append(failure)
    verdict = (
        f"ok (inside: user {UID}, entrypoints, no build tools; crm-api answered /healthz 200)"
        if not problems
        else f"FAILED ({len(problems)} problem(s), below)"
    )
    print(f"images-check {svc.name}: {verdict} in {time.perf_counter() - started:.0f}s")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "check"))
    parser.add_argument("services", nargs="*", help="default: every service")
    parser.add_argument("--prefix", default="crm-")
    parser.add_argument("--tag", default="dev")
    parser.add_argument("--rebuild-base", action="store_true")
    args = parser.parse_intermixed_args(argv)
    chosen = [s for s in SERVICES if not args.services or s.name in args.services]
    if unknown := set(args.services) - {s.name for s in SERVICES}:
        parser.error(f"unknown services: {sorted(unknown)}")
    if missing := missing_tools():
        if args.command == "check":
            print(f"images-check: SKIPPED: no {', '.join(missing)} on this machine. {TOOLS_MISSING}")
            return 0
        if docker_answers():
            for svc in chosen:
                run(
                    [
                        "docker",
                        "build",
                        "-f",
                        f"services/{svc.name}/Dockerfile",
                        "-t",
                        image_name(svc, args.prefix, args.tag),
                        str(ROOT),
                    ]
                )
            return 0
        print(
            f"images: no {', '.join(missing)} on this machine, and no Docker engine answers. {TOOLS_MISSING}",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    try:
        build_base(args.rebuild_base)
        for svc in chosen:
            build(svc, args.prefix, args.tag)
        if args.command == "build":
            return 0
        problems = {}
        with tempfile.TemporaryDirectory(prefix="crm-images-") as workdir:
            for svc in chosen:
                problems[svc.name] = check(svc, image_name(svc, args.prefix, args.tag), Path(workdir))
    except (Failed, subprocess.SubprocessError) as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    for name, found in problems.items():
        for problem in found:
            print(f"  {name}: {problem}")
    failed = sum(1 for found in problems.values() if found)
    print(f"images-check: built and checked in {time.perf_counter() - started:.0f}s")
    print(f"images-check: {len(problems) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
