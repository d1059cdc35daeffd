"""deploy/Dockerfile, checked by building what it copies and running what it runs.

No container engine runs here, so the build stage is replayed on this machine: the build
context is the repository filtered by the root .dockerignore, each COPY copies from it into
a temporary root (container paths map under it), and each RUN runs there with the stage's
ENV, so tokenway is installed for real, from PyPI, into a fresh virtualenv exactly as the
image build installs it. The final stage's ENTRYPOINT and CMD then run from that virtualenv.
The same Python minor version as the base image runs the replay (checked below).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Ignore, Stage, env_pairs, parse
from tests.deploy.k8s import (
    ROOT,
    config_path,
    config_text,
    gateway,
    gateway_container,
    placeholder_env,
)
from tokenway import cli

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BASE_IMAGE = "python:3.11-slim"
# Variables of the machine running the tests that would bend the replay toward it.
HOST_ONLY = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")


def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def final() -> Stage:
    return stages()[-1]


def context_files() -> list[str]:
    return Ignore((ROOT / ".dockerignore").read_text(encoding="utf-8")).files(ROOT)


def host_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HOST_ONLY}
    # `python` and `pip` as the base image has them: this interpreter's, outside any venv.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return {**env, **extra}


class Image:
    """The build stage replayed under `root`; container path /x is `root`/x."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env: dict[str, str] = {}  # the stage's ENV, in container paths

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def mapped_env(self) -> dict[str, str]:
        return {k: str(self.path(v)) if v.startswith("/") else v for k, v in self.env.items()}

    def build(self, stage: Stage, context: list[str]) -> None:
        workdir = "/"
        for ins in stage.instructions:
            if ins.keyword == "ENV":
                self.env.update(env_pairs(ins, self.env))
            elif ins.keyword == "WORKDIR":
                workdir = posixpath.join(workdir, ins.text)
                self.path(workdir).mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                assert not ins.flags, f"COPY {ins.flags}: the build stage copies from the context"
                *sources, dest = ins.words()
                for source in sources:
                    self.copy(source, posixpath.join(workdir, dest), dest.endswith("/"), context)
            elif ins.keyword == "RUN":
                self.run(ins.text, workdir)
            else:
                raise AssertionError(f"the replay does not know {ins.keyword}: teach it")

    def copy(self, source: str, dest: str, into: bool, context: list[str]) -> None:
        src = posixpath.normpath(source)
        files = [f for f in context if f == src or f.startswith(src + "/")]
        assert files, f"COPY {source}: not in the build context (missing, or .dockerignore'd)"
        for f in files:
            if f == src:  # a file: into the directory `dest/`, or as `dest`
                target = self.path(dest) / Path(f).name if into else self.path(dest)
            else:  # a directory's contents go into `dest`
                target = self.path(dest) / f[len(src) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, target)

    def run(self, script: str, workdir: str) -> None:
        # Every container path in a RUN must come from ENV, or the replay could not map it.
        literal = re.findall(r"(?:^|[\s\"'=])(/[A-Za-z][^\s\"']*)", script)
        assert not literal, f"RUN names container paths {literal}: put them in ENV"
        done = subprocess.run(
            ["sh", "-ec", script],
            cwd=self.path(workdir),
            env=host_env(self.mapped_env()),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"RUN {script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    (build,) = [s for s in stages() if s.name == "build"]
    img = Image(tmp_path_factory.mktemp("image"))
    img.build(build, context_files())
    yield img


def entrypoint(img: Image) -> Path:
    """The final stage's ENTRYPOINT program, found on its PATH among what it copies in."""
    (copy,) = final().all("COPY")
    source, dest = copy.words()
    assert copy.flags == {"from": "build"}
    # The venv's scripts name their interpreter by absolute path: it must not move.
    assert source == dest == img.env["VIRTUAL_ENV"]
    env: dict[str, str] = {}
    for ins in final().all("ENV"):
        env.update(env_pairs(ins, env))
    program = final().last("ENTRYPOINT")
    assert program is not None
    name = program.words()[0]
    for entry in env["PATH"].split(":"):
        if entry.startswith(dest) and img.path(entry).joinpath(name).exists():
            return img.path(entry) / name
    raise AssertionError(f"ENTRYPOINT {name} is on no PATH entry that the build produced")


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=host_env(env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


# ---- what the Dockerfile says -------------------------------------------------------------


def test_every_stage_is_the_official_python_311_slim() -> None:
    assert [s.image.partition("@")[0] for s in stages()] == [BASE_IMAGE] * len(stages())
    # The replay installs with this interpreter: it must be the base image's Python.
    assert BASE_IMAGE.startswith(f"python:{sys.version_info[0]}.{sys.version_info[1]}-")


def test_the_context_holds_what_the_build_needs_and_no_local_state() -> None:
    ignore = Ignore((ROOT / ".dockerignore").read_text(encoding="utf-8"))
    for kept in ("pyproject.toml", "README.md", "src/tokenway/cli.py", "src/tokenway/py.typed"):
        assert not ignore.excluded(kept), kept
    for left_out in (
        ".venv/bin/python",
        ".git/config",
        ".env",
        "tokenway-data/ledger.db",
        "tokenway-data/spool/x.jsonl",
        "src/tokenway/__pycache__/cli.cpython-311.pyc",
        "src/tokenway.egg-info/PKG-INFO",
        "tests/test_cli.py",
        "deploy/k8s/secret.template.yaml",
    ):
        assert ignore.excluded(left_out), left_out
    files = context_files()
    assert "src/tokenway/cli.py" in files
    assert not [f for f in files if f.startswith((".venv/", ".git/", "tokenway-data/"))]


def test_every_copy_source_exists_in_the_build_context() -> None:
    files = context_files()
    for stage in stages():
        for copy in stage.all("COPY"):
            if "from" in copy.flags:
                continue  # from another stage: the replay below checks it
            for source in copy.words()[:-1]:
                src = posixpath.normpath(source)
                assert any(f == src or f.startswith(src + "/") for f in files), source


def test_the_image_runs_as_a_fixed_non_root_user_with_no_secret() -> None:
    user = final().last("USER")
    assert user is not None
    uid, _, gid = user.text.partition(":")
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot can only verify a numeric uid"
    pod = gateway()["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))
    # Credentials arrive at run time (the Secret); no variable of the build may hold one.
    names = [
        word.partition("=")[0]
        for stage in stages()
        for ins in stage.all("ENV") + stage.all("ARG")
        for word in ins.words()
    ]
    assert names
    assert not [n for n in names if re.search(r"KEY|SECRET|PASSWORD|TOKEN", n)]


def test_image_command_is_the_one_kubernetes_runs() -> None:
    program, command = final().last("ENTRYPOINT"), final().last("CMD")
    assert program is not None and command is not None
    assert program.words() == gateway_container()["command"]
    args = cli.build_parser().parse_args(command.words())
    assert args.fn is cli.cmd_serve
    assert (args.config, args.host, args.workers) == (config_path(), "0.0.0.0", 1)


# ---- what it builds and runs --------------------------------------------------------------


def test_the_built_entrypoint_serves_help(image: Image, tmp_path: Path) -> None:
    command = final().last("CMD")
    assert command is not None
    out = run([str(entrypoint(image)), *command.words(), "--help"], cwd=tmp_path)
    assert "usage: tokenway serve" in out
    assert "--workers" in out


def test_the_built_image_accepts_the_kubernetes_config(image: Image, tmp_path: Path) -> None:
    config = tmp_path / "tokenway.yaml"
    config.write_text(config_text(), encoding="utf-8")
    out = run([str(entrypoint(image)), "config", "check", str(config)], tmp_path, placeholder_env())
    assert ": ok (" in out


def test_the_built_venv_holds_every_runtime_dependency(image: Image, tmp_path: Path) -> None:
    venv = Path(image.mapped_env()["VIRTUAL_ENV"])
    # What a PostgreSQL + Redis gateway imports, from the venv alone (not this checkout).
    code = (
        "import tokenway, tokenway.gateway.app, tokenway.runtime, tokenway.workers, "
        "tokenway.accounting.postgres, tokenway.limits.redis_state, uvloop, httptools; "
        "print(tokenway.__file__)"
    )
    out = run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert Path(out.strip()).is_relative_to(venv)
    # The runtime image carries no installer.
    assert not (venv / "bin" / "pip").exists()
