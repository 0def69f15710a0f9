"""The software environments: the lock is what `make install` installs, and `--sdm conda`'s env pins it.

requirements/lock-runtime.txt and lock-dev.txt pin every package of the closure of pyproject.toml's
requirements (written by `make lock`, requirements/lock.py); `make install` installs lock-dev.txt, CI
the same. envs/vlalert.yaml's pip section is lock-runtime.txt, and it names no path: Snakemake copies
the env file to .snakemake/conda/<hash>.yaml and conda runs its pip step from that copy's folder
(it writes the pip lines to a condaenv.*.requirements.txt there and runs `pip install -U -r` in it),
so a `-e ..` pointed at .snakemake/, not at the checkout. No conda here: the pip step is checked the
way conda runs it, from a copy of the env file in another folder. The project itself is not installed
into the env: a `script:` job imports it from the Snakefile's folder, which Snakemake puts on the
script's sys.path (the last test shows that).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's own copy of tomli
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "envs" / "vlalert.yaml"
RUNTIME_LOCK = REPO / "requirements" / "lock-runtime.txt"
DEV_LOCK = REPO / "requirements" / "lock-dev.txt"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def read_lock(path: Path) -> dict[str, str]:
    """Canonical name -> pinned version of a lock file, following its `-r` lines."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            pins.update(read_lock(path.parent / line[3:].strip()))
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.extras and req.marker is None and req.url is None, line
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def env_dependencies(env_file: Path) -> tuple[list[str], list[str]]:
    """An env file's conda dependencies and the lines of its pip section."""
    deps = yaml.safe_load(env_file.read_text())["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = [line for d in deps if isinstance(d, dict) for line in d.get("pip", [])]
    return conda, pip


def conda_pip_step(env_file: Path) -> Path:
    """What conda writes for the pip step: the pip lines in a requirements file beside the env file."""
    req = env_file.parent / "condaenv.test.requirements.txt"
    req.write_text("\n".join(env_dependencies(env_file)[1]))
    return req


def installed_closure(roots: list[Requirement]) -> set[str]:
    """Canonical names of `roots` and everything they require, from the installed packages' metadata."""
    extras: dict[str, set[str]] = {}
    todo = [(r, "") for r in roots]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        new = ({""} | {canonicalize_name(e) for e in req.extras}) - extras.get(name, set())
        if not new:
            continue
        extras.setdefault(name, set()).update(new)
        todo += [(Requirement(dep), e) for dep in metadata.requires(name) or [] for e in new]
    return set(extras)


def project_requirements(extra: str = "") -> list[Requirement]:
    """pyproject.toml's dependencies, or its `extra`'s."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(r) for r in reqs]


@pytest.fixture
def env_copy(tmp_path) -> Path:
    """envs/vlalert.yaml where Snakemake puts it for conda: .snakemake/conda/<hash>.yaml, elsewhere."""
    copy = tmp_path / "elsewhere" / ".snakemake" / "conda" / "0123abcd.yaml"
    copy.parent.mkdir(parents=True)
    shutil.copy2(ENV_FILE, copy)
    return copy


def test_env_pip_step_names_no_path(env_copy):
    """Every pip line is a plain `name==version`: nothing resolves against the env file's folder."""
    req = conda_pip_step(env_copy)
    lines = req.read_text().splitlines()
    assert lines, "the env's pip section is empty"
    for line in lines:
        assert not line.startswith("-"), f"{line!r}: an option (-e/-r/-c) names a path relative to the copy"
        assert "/" not in line and "\\" not in line and ".." not in line, f"{line!r} names a path"
        pin = Requirement(line)
        assert pin.url is None and pin.marker is None, line
        assert [s.operator for s in pin.specifier] == ["=="], f"{line!r} is not an exact pin"


def test_env_pins_are_the_runtime_lock():
    """One source: the env's pip section is lock-runtime.txt, for the Python the lock was resolved on."""
    conda, pip = env_dependencies(ENV_FILE)
    pins = {canonicalize_name(r.name): str(next(iter(r.specifier)).version) for r in map(Requirement, pip)}
    assert pins == read_lock(RUNTIME_LOCK), "envs/vlalert.yaml is stale: run `make lock`"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"python={python}" in conda
    assert f"for CPython {python} on" in RUNTIME_LOCK.read_text()
    assert "vlalert" not in pins


def test_lock_pins_what_make_install_installs():
    """The locks pin exactly the closure of pyproject.toml's requirements, at the installed versions."""
    runtime, dev = project_requirements(), project_requirements("dev")
    assert runtime and dev
    runtime_lock, dev_lock = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    assert set(runtime_lock) == installed_closure(runtime)
    assert set(dev_lock) - {"pip"} == installed_closure(runtime + dev)
    assert "torch" in runtime_lock and runtime_lock["torch"] == "2.13.0"
    for req in runtime + dev:
        assert req.specifier.contains(dev_lock[canonicalize_name(req.name)]), f"lock outside pyproject: {req}"
    drift = {
        name: (pinned, metadata.version(name))
        for name, pinned in dev_lock.items()
        if Version(metadata.version(name)).public != pinned
    }
    assert not drift, f"installed versions differ from the lock (pinned, installed): {drift}; `make install`"


def index_reachable() -> bool:
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", "pip"], capture_output=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


@pytest.mark.slow
def test_env_pip_step_resolves_from_a_copy(env_copy, tmp_path):
    """conda's pip step, run from the copy's folder (dry): it installs exactly the pins, nothing unpinned."""
    if not index_reachable():
        pytest.skip("no package index reachable")
    req = conda_pip_step(env_copy)
    report = tmp_path / "report.json"
    # conda: `pip install -U -r condaenv.*.requirements.txt --exists-action=b`, cwd the env file's folder
    cmd = [sys.executable, "-m", "pip", "install", "-U", "-r", req.name, "--exists-action=b"]
    cmd += ["--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
    res = subprocess.run(cmd, cwd=env_copy.parent, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    resolved = {
        canonicalize_name(i["metadata"]["name"]): Version(i["metadata"]["version"]).public for i in installs
    }
    assert resolved == read_lock(RUNTIME_LOCK)


@pytest.mark.slow
def test_script_jobs_import_the_snakefile_folder_without_install(tmp_path):
    """Why the env need not install vlalert: a `script:` job imports a package that lies beside the
    Snakefile and is installed nowhere, with the working directory elsewhere and no PYTHONPATH."""
    flow = tmp_path / "flow"
    (flow / "scripts").mkdir(parents=True)
    (flow / "beside_the_snakefile").mkdir()
    (flow / "beside_the_snakefile" / "__init__.py").write_text("WHERE = __file__\n")
    (flow / "scripts" / "job.py").write_text(
        "import beside_the_snakefile\n\nopen(snakemake.output[0], 'w').write(beside_the_snakefile.WHERE)\n"
    )
    rule = 'rule all:\n    output:\n        "out.txt",\n    script:\n        "scripts/job.py"\n'
    (flow / "Snakefile").write_text(rule)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [SNAKEMAKE, "--snakefile", str(flow / "Snakefile"), "--directory", str(work), "--cores", "1"]
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert Path((work / "out.txt").read_text()).parent.parent == flow
