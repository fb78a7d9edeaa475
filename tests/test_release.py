"""``scripts/release.py`` and the release metadata of the four packages.

The release runs in a copy of the repo's tracked files (a fresh git repo in ``tmp_path``), never
in the work tree. uv runs with ``UV_OFFLINE=1``: ``uv sync`` has filled uv's cache with every
locked wheel, and the clean venv is installed from the lock's URLs, so uv hardlinks torch and
friends from its cache instead of downloading gigabytes.

Default run: the static metadata checks, the error paths (``--dry-run``: no build) and one
release of tag-kernels 0.2.0 without the install check (bump, ranges, lock, build, artifact
checks; a few seconds). ``-m slow``: the same release with the clean-venv install check, and the
user story: a fresh venv holding only the tag-kernels wheel and its declared dependencies runs
the Python example of ``kernels/README.md``.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "scripts/release.py"
MEMBERS = {
    "tag-kernels": ("kernels", "tag_kernels"),
    "tag-model": ("packages/tag-model", "tag_model"),
    "tag-train": ("packages/tag-train", "tag_train"),
    "tag-eval": ("packages/tag-eval", "tag_eval"),
}
SIBLINGS = {"tag-kernels": [], "tag-model": ["tag-kernels"]}
SIBLINGS["tag-train"] = SIBLINGS["tag-eval"] = ["tag-kernels", "tag-model"]
DEPENDENTS_OF_KERNELS = ["tag-model", "tag-train", "tag-eval"]
URL_KEYS = {"Homepage", "Repository", "Issues", "Documentation"}
CLASSIFIERS = {
    "Development Status :: 3 - Alpha",
    "Operating System :: POSIX :: Linux",
    "Programming Language :: Python :: 3",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
    "Topic :: Scientific/Engineering :: Image Recognition",
}
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)
DATE = "2026-12-01"

needs_uv = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")


def _env() -> dict[str, str]:
    env = dict(os.environ, UV_OFFLINE="1")
    env.pop("VIRTUAL_ENV", None)
    return env


def _git(repo: Path, *args: str) -> str:
    ident = ["-c", "user.name=release-test", "-c", "user.email=release-test@example.invalid"]
    out = subprocess.run(
        ["git", *ident, *args], cwd=repo, check=True, capture_output=True, text=True
    )
    return out.stdout


def _copy_repo(dest: Path) -> Path:
    """The tracked files of the work tree (as they are now) in a fresh one-commit git repo."""
    files = _git(ROOT, "ls-files", "-z").split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the work tree is left out
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # The script and this test may not be committed yet while they are being worked on.
    for rel in (SCRIPT, "tests/test_release.py"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "snapshot")
    return dest


def _release(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo / SCRIPT), *args, "--repo", str(repo)],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _version(repo: Path, name: str) -> str:
    rel, mod = MEMBERS[name]
    found = VERSION_LINE.findall((repo / rel / "src" / mod / "__init__.py").read_text())
    assert len(found) == 1, found
    return found[0]


def _metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


def _readme_example() -> str:
    text = (ROOT / "kernels" / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    assert blocks, "kernels/README.md has no ```python example"
    return "\n".join(blocks)


# ---------------------------------------------------------------------------- static metadata


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_member_release_metadata(name: str) -> None:
    rel, mod = MEMBERS[name]
    data = tomllib.loads((ROOT / rel / "pyproject.toml").read_text())
    project = data["project"]
    assert project["name"] == name
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / rel / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert "Copyright 2026 TAG developers" in (ROOT / "LICENSE").read_text()
    assert set(project["urls"]) >= URL_KEYS
    assert all(u.startswith("https://github.com/tag-fer/tag") for u in project["urls"].values())
    assert set(project["classifiers"]) >= CLASSIFIERS
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]  # PEP 639
    # one version source: __version__ in the package, read by hatch
    assert "version" not in project and project["dynamic"] == ["version"]
    assert data["tool"]["hatch"]["version"]["path"] == f"src/{mod}/__init__.py"
    version = _version(ROOT, name)
    # siblings: a compatible-release range on their current version, resolved in the workspace
    deps = project["dependencies"]
    for sib in SIBLINGS[name]:
        assert f"{sib}~={_version(ROOT, sib)}" in deps
        assert data["tool"]["uv"]["sources"][sib] == {"workspace": True}
    # every other requirement has a lower bound
    for dep in deps:
        assert re.search(r"(>=|~=|==)", dep), dep
    log = (ROOT / rel / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in log
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", log, re.M)
    assert (ROOT / rel / "src" / mod / "py.typed").is_file()


def test_tested_lower_bounds_are_declared() -> None:
    """The code was run with trl 1.16, transformers 5.24 and datasets 5.2 (datasets.List)."""
    train = tomllib.loads((ROOT / "packages/tag-train/pyproject.toml").read_text())
    model = tomllib.loads((ROOT / "packages/tag-model/pyproject.toml").read_text())
    assert {"trl>=1.16", "transformers>=5.24", "datasets>=5.2"} <= set(
        train["project"]["dependencies"]
    )
    assert {"transformers>=5.24", "datasets>=5.2"} <= set(model["project"]["dependencies"])


# ---------------------------------------------------------------------------- error paths


def test_help() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / SCRIPT), "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "PACKAGE" in out.stdout.upper() and "--dry-run" in out.stdout


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One read-only copy for the ``--dry-run`` and error-path tests."""
    return _copy_repo(tmp_path_factory.mktemp("repo"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tag-kernel", "0.2.0"], "unknown package 'tag-kernel'; choose one of: tag-eval, tag-"),
        (["tag-kernels", "v0.2.0"], "bad version string 'v0.2.0'"),
        (["tag-kernels", "0.2.0+local"], "bad version string '0.2.0+local'"),
        (["tag-kernels", "two"], "bad version string 'two'"),
        (["tag-kernels", "0.1.0"], "version 0.1.0 is not above tag-kernels's current 0.1.0"),
        (["tag-kernels", "0.2.0", "--date", "1st of May"], "--date '1st of May' is not"),
    ],
)
def test_bad_arguments_fail_in_one_line(repo_copy: Path, args: list[str], message: str) -> None:
    out = _release(repo_copy, *args, "--dry-run")
    assert out.returncode == 1, out.stdout
    assert out.stderr.startswith(f"release.py: error: {message}"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not _git(repo_copy, "status", "--porcelain")


def test_dry_run_prints_the_plan_and_writes_nothing(repo_copy: Path) -> None:
    out = _release(repo_copy, "tag-kernels", "0.2.0", "--dry-run", "--date", DATE)
    assert out.returncode == 0, out.stderr
    assert (
        "would edit kernels/src/tag_kernels/__init__.py: __version__ 0.1.0 -> 0.2.0" in out.stdout
    )
    for dep in DEPENDENTS_OF_KERNELS:
        assert f"would edit {MEMBERS[dep][0]}/pyproject.toml: tag-kernels~=0.1.0" in out.stdout
    assert "tag: tag-kernels-v0.2.0" in out.stdout
    assert "uv publish dist/tag_kernels-0.2.0-py3-none-any.whl" in out.stdout
    assert not _git(repo_copy, "status", "--porcelain")


def test_refuses_dirty_files_and_foreign_ranges(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    init = repo / "kernels/src/tag_kernels/__init__.py"
    init.write_text(init.read_text() + "\n# local edit\n")
    out = _release(repo, "tag-kernels", "0.2.0", "--dry-run")
    assert out.returncode == 1
    assert out.stderr == (
        "release.py: error: uncommitted changes in kernels/src/tag_kernels/__init__.py; "
        "commit or stash them first\n"
    )
    _git(repo, "checkout", "--", ".")
    (repo / "kernels/scratch.py").write_text("x = 1\n")  # untracked counts too
    out = _release(repo, "tag-kernels", "0.2.0", "--dry-run")
    assert "uncommitted changes in kernels/scratch.py" in out.stderr
    (repo / "kernels/scratch.py").unlink()

    # A dependent that pins the package some other way is not rewritten behind its back.
    toml = repo / "packages/tag-eval/pyproject.toml"
    toml.write_text(toml.read_text().replace('"tag-kernels~=0.1.0"', '"tag-kernels>=0.1"'))
    _git(repo, "commit", "-q", "-am", "hand-made range")
    out = _release(repo, "tag-kernels", "0.2.0", "--dry-run")
    assert out.returncode == 1
    assert "packages/tag-eval/pyproject.toml requires 'tag-kernels>=0.1'" in out.stderr


def test_not_a_git_repo(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    shutil.rmtree(repo / ".git")
    out = _release(repo, "tag-kernels", "0.2.0", "--dry-run")
    assert out.returncode == 1
    assert "is not a git work tree" in out.stderr


# ---------------------------------------------------------------------------- a release


def _assert_released_tag_kernels(repo: Path, out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stdout + out.stderr
    # (a) the version bump and the dependents' ranges
    assert _version(repo, "tag-kernels") == "0.2.0"
    assert _version(repo, "tag-model") == "0.1.0"
    for dep in DEPENDENTS_OF_KERNELS:
        text = (repo / MEMBERS[dep][0] / "pyproject.toml").read_text()
        assert '"tag-kernels~=0.2.0"' in text and "tag-kernels~=0.1" not in text
        assert (
            "- Requires `tag-kernels~=0.2.0`."
            in (repo / MEMBERS[dep][0] / "CHANGELOG.md").read_text()
        )
    log = (repo / "kernels/CHANGELOG.md").read_text()
    assert (
        log.index("## [Unreleased]") < log.index(f"## [0.2.0] - {DATE}") < log.index("## [0.1.0]")
    )
    assert (
        "[0.2.0]: https://github.com/tag-fer/tag/compare/tag-kernels-v0.1.0...tag-kernels-v0.2.0"
        in log
    )
    changed = {line[3:] for line in _git(repo, "status", "--porcelain").splitlines()}
    assert changed == {
        "kernels/src/tag_kernels/__init__.py",
        "kernels/CHANGELOG.md",
        *(
            f"{MEMBERS[d][0]}/{f}"
            for d in DEPENDENTS_OF_KERNELS
            for f in ("pyproject.toml", "CHANGELOG.md")
        ),
    }
    # (b) the lock still matches the workspace
    check = subprocess.run(
        ["uv", "lock", "--check"], cwd=repo, env=_env(), capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    # (c, d) the artifacts, read here independently of the script
    wheel = repo / "dist/tag_kernels-0.2.0-py3-none-any.whl"
    sdist = repo / "dist/tag_kernels-0.2.0.tar.gz"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = _metadata(zf.read("tag_kernels-0.2.0.dist-info/METADATA").decode())
        init = zf.read("tag_kernels/__init__.py").decode()
    assert {
        "tag_kernels/py.typed",
        "tag_kernels/au_reward/_reference.py",
        "tag_kernels-0.2.0.dist-info/licenses/LICENSE",
    } <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert VERSION_LINE.findall(init) == ["0.2.0"]
    with tarfile.open(sdist) as tf:
        snames = set(tf.getnames())
        pkg_info = _metadata(tf.extractfile("tag_kernels-0.2.0/PKG-INFO").read().decode())
        license_text = tf.extractfile("tag_kernels-0.2.0/LICENSE").read()
    assert {
        f"tag_kernels-0.2.0/{n}"
        for n in (
            "LICENSE",
            "CHANGELOG.md",
            "README.md",
            "pyproject.toml",
            "src/tag_kernels/py.typed",
        )
    } <= snames
    assert license_text == (ROOT / "LICENSE").read_bytes()
    for md in (meta, pkg_info):
        assert md["Name"] == "tag-kernels" and md["Version"] == "0.2.0"
        assert md["License-Expression"] == "Apache-2.0"
        assert md.get_all("License-File") == ["LICENSE"]
        urls = dict(u.split(", ", 1) for u in md.get_all("Project-URL"))
        assert set(urls) >= URL_KEYS
        assert set(md.get_all("Classifier")) >= CLASSIFIERS
        reqs = md.get_all("Requires-Dist")
        assert "numpy>=2.4" in reqs and "torch>=2.15" in reqs
        assert md["Description-Content-Type"] == "text/markdown"
        assert "## Example" in md.get_payload()
    # (e) the tag and the publish command
    assert "tag: tag-kernels-v0.2.0" in out.stdout
    assert "git tag -a tag-kernels-v0.2.0" in out.stdout
    assert (
        "uv publish dist/tag_kernels-0.2.0-py3-none-any.whl dist/tag_kernels-0.2.0.tar.gz"
        in out.stdout
    )


@needs_uv
def test_release_tag_kernels_bumps_locks_builds_and_checks(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    out = _release(repo, "tag-kernels", "0.2.0", "--date", DATE, "--no-install-check")
    _assert_released_tag_kernels(repo, out)
    assert "checked: metadata, LICENSE, py.typed" in out.stdout
    # the dependents' wheels carry the new range
    build = subprocess.run(
        ["uv", "build", "--package", "tag-model", "--wheel", "--out-dir", str(tmp_path / "m")],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (whl,) = (tmp_path / "m").glob("tag_model-0.1.0-*.whl")
    with zipfile.ZipFile(whl) as zf:
        md = _metadata(zf.read("tag_model-0.1.0.dist-info/METADATA").decode())
    assert "tag-kernels~=0.2.0" in md.get_all("Requires-Dist")


@pytest.mark.slow
@needs_uv
def test_release_installs_clean_and_runs_the_readme_example(tmp_path: Path) -> None:
    """The user story: only the tag-kernels wheel and its declared dependencies, in a fresh
    venv, run the README example on the CPU with NumPy inputs."""
    repo = _copy_repo(tmp_path / "repo")
    venv = tmp_path / "venv"
    out = _release(repo, "tag-kernels", "0.2.0", "--date", DATE, "--keep-venv", str(venv))
    _assert_released_tag_kernels(repo, out)
    assert "installed: a clean venv installs tag_kernels-0.2.0-py3-none-any.whl" in out.stdout

    py = venv / "bin" / "python"
    listing = subprocess.run(
        ["uv", "pip", "list", "--python", str(py), "--format", "freeze"],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {line.split("==")[0].lower() for line in listing.splitlines()}
    assert "tag-kernels" in installed
    assert not installed & {"tag-model", "transformers", "jax", "pytest", "scipy"}

    example = tmp_path / "readme_example.py"
    example.write_text(_readme_example())
    run = subprocess.run(
        [str(py), "-I", str(example)],
        cwd=tmp_path,
        env={k: v for k, v in _env().items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("tag-kernels 0.2.0: reward 0.3333")
