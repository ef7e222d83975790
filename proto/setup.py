"""Generates the gRPC Python code from proto/crm/**/*.proto when the package is built.

Generated files are never committed; `pip install ./proto` (run by `make`) and the
Docker builds produce them from the contracts.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent.resolve()


class GenerateThenBuild(build_py):
    def run(self) -> None:
        import grpc_tools
        from grpc_tools import protoc

        protos = sorted(str(p.relative_to(HERE)) for p in (HERE / "crm").rglob("*.proto"))
        well_known = str(Path(grpc_tools.__file__).parent / "_proto")
        code = protoc.main(
            [
                "protoc",
                f"-I{HERE}",
                f"-I{well_known}",
                f"--python_out={HERE}",
                f"--grpc_python_out={HERE}",
                f"--pyi_out={HERE}",
                *protos,
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        for folder in {p.parent for p in (HERE / "crm").rglob("*.proto")} | {HERE / "crm"}:
            while folder != HERE:
                (folder / "__init__.py").touch()
                folder = folder.parent
        super().run()


setup(
    packages=[str(p.relative_to(HERE)).replace("/", ".") for p in (HERE / "crm").rglob("*") if p.is_dir()] + ["crm"],
    package_data={"": ["*.proto", "*.pyi"]},
    cmdclass={"build_py": GenerateThenBuild},
)
