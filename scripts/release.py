#!/usr/bin/env python3
"""Release one package of the TAG workspace on its own.

    uv run scripts/release.py tag-kernels 0.2.0 [--repo DIR] [--dry-run]

Steps, in order (the first failure stops with a one-line ``release.py: error: ...``, exit 1):

1. Check: the package is a workspace member, VERSION is a canonical PEP 440 version above the
   current one, the repo is a git work tree and the files this release reads or writes have no
   uncommitted changes, every sibling that depends on the package pins it as ``~=CURRENT``.
2. Bump ``__version__`` in the package's ``__init__.py`` (the single source of its version),
   rewrite every dependent sibling's ``NAME~=OLD`` to ``NAME~=VERSION``, open
   ``## [VERSION] - DATE`` under ``## [Unreleased]`` in the package's CHANGELOG.md and note the
   new range under ``[Unreleased]`` in each dependent's CHANGELOG.md.
3. ``uv lock``.
4. ``uv build --package NAME --out-dir OUT`` (the sdist, then the wheel built from it).
5. Check both artifacts: the metadata parses (``packaging.metadata`` when installed, else
   ``email.parser``) with the right name, version, SPDX license, project URLs, sibling ranges and
   a lower bound on every other requirement; LICENSE, ``py.typed``, every git-tracked file of
   the package's source tree (package data such as tag-train's configs YAML) and, in the sdist,
   README.md, CHANGELOG.md and pyproject.toml are inside; no caches are.
6. Unless ``--no-install-check``: a clean venv (``uv venv``) gets the lock's resolution of exactly
   the package's declared dependencies (``uv export --format pylock.toml --package NAME``: no
   index look-up, so uv's cache serves it, ``UV_OFFLINE=1`` works), then the wheel and the
   freshly built wheels of the siblings it depends on (``--no-deps``); ``uv pip check`` must find
   every requirement met, and the package must import at VERSION (``--keep-venv`` keeps it).
7. Print the git tag (``NAME-vVERSION``) and the commands to commit, tag and publish.

``--dry-run`` runs the checks of step 1 and prints the edits and the commands, writing nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

PROG = "release.py"
URL_KEYS = ("Homepage", "Repository", "Issues", "Documentation")
CACHE_PARTS = ("__pycache__", ".pyc", ".nbi", ".nbc", ".pytest_cache", ".ruff_cache")
VERSION_LINE = re.compile(r"""^__version__\s*=\s*(["'])([^"']*)\1[ \t]*$""", re.M)
UNRELEASED = re.compile(r"^## \[Unreleased\][ \t]*$", re.M)
UNRELEASED_LINK = re.compile(r"^\[Unreleased\]: (\S+)/compare/(\S+)\.\.\.HEAD[ \t]*$", re.M)
PEP440 = re.compile(  # canonical public versions: 1.2.3, 1.2.3rc1, 1.2.3.post1, 1.2.3.dev4
    r"^(?:([1-9]\d*)!)?((?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*))*)"
    r"(?:(a|b|rc)(0|[1-9]\d*))?(?:\.post(0|[1-9]\d*))?(?:\.dev(0|[1-9]\d*))?$"
)


class ReleaseError(Exception):
    """A one-line reason to stop."""


# ---------------------------------------------------------------------------- helpers


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_name(name: str) -> str:
    """The file-name form of a project name (``tag-kernels`` -> ``tag_kernels``)."""
    return canonical(name).replace("-", "_")


def _version_key(text: str) -> tuple:
    """PEP 440 ordering of a canonical version (the fallback when packaging is missing)."""
    m = PEP440.match(text)
    if not m:
        raise ValueError(text)
    epoch, release, pre_l, pre_n, post, dev = m.groups()
    nums = [int(x) for x in release.split(".")]
    while len(nums) > 1 and nums[-1] == 0:
        nums.pop()
    if pre_l:
        pre = ({"a": 0, "b": 1, "rc": 2}[pre_l], int(pre_n))
    else:
        pre = (-1, 0) if dev and not post else (3, 0)
    return (
        int(epoch or 0),
        tuple(nums),
        pre,
        int(post) if post else -1,
        (0, int(dev)) if dev else (1, 0),
    )


def check_version_string(text: str) -> None:
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging ships with the workspace
        ok = bool(PEP440.match(text))
        canon = text
    else:
        try:
            canon = str(Version(text))
        except InvalidVersion:
            ok = canon = False
        else:
            ok = True
    if not ok:
        raise ReleaseError(f"bad version string {text!r}: not a PEP 440 version")
    if "+" in text:
        raise ReleaseError(f"bad version string {text!r}: a local version cannot be published")
    if canon != text or not PEP440.match(text):
        raise ReleaseError(
            f"bad version string {text!r}: write it in canonical PEP 440 form, {canon!r}"
        )


def version_above(new: str, old: str) -> bool:
    try:
        from packaging.version import Version
    except ImportError:  # pragma: no cover
        return _version_key(new) > _version_key(old)
    return Version(new) > Version(old)


@dataclass
class Req:
    name: str  # canonical
    specifier: str
    marker: str
    text: str


def parse_requirement(text: str) -> Req:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover
        m = re.match(
            r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(?:;(.*))?$", text
        )
        if not m:
            raise ReleaseError(f"cannot parse requirement {text!r}") from None
        return Req(canonical(m[1]), m[3].replace(" ", ""), (m[4] or "").strip(), text)
    r = Requirement(text)
    return Req(canonical(r.name), str(r.specifier), str(r.marker or ""), text)


def has_lower_bound(specifier: str) -> bool:
    return any(op in specifier for op in (">=", "~=", "==", ">"))


@dataclass
class Member:
    name: str  # as in pyproject
    path: Path  # absolute member directory
    rel: str  # directory relative to the repo root
    module: str  # import name
    version_file: Path
    version: str
    requires: list[Req] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return canonical(self.name)


def run(cmd: list[str], cwd: Path, *, what: str | None = None) -> str:
    """Run ``cmd``; on failure raise a one-line error followed by the tail of its output."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # uv commands act on --repo, not on the caller's venv
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:]
        detail = "\n".join("    " + line for line in tail)
        raise ReleaseError(f"`{what or ' '.join(cmd)}` failed (exit {proc.returncode})\n{detail}")
    return proc.stdout


def find_uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        raise ReleaseError("uv not found on PATH (install it: https://docs.astral.sh/uv/)")
    return uv


# ---------------------------------------------------------------------------- workspace


def load_workspace(repo: Path) -> dict[str, Member]:
    root_toml = repo / "pyproject.toml"
    if not root_toml.is_file():
        raise ReleaseError(f"{repo} has no pyproject.toml (pass the workspace root with --repo)")
    root = tomllib.loads(root_toml.read_text())
    globs = root.get("tool", {}).get("uv", {}).get("workspace", {}).get("members")
    if not globs:
        raise ReleaseError(f"{root_toml} declares no [tool.uv.workspace] members")
    members: dict[str, Member] = {}
    for pattern in globs:
        for path in sorted(repo.glob(pattern)):
            toml = path / "pyproject.toml"
            if not toml.is_file():
                continue
            data = tomllib.loads(toml.read_text())
            project = data.get("project", {})
            name = project.get("name")
            rel = path.relative_to(repo).as_posix()
            vpath = data.get("tool", {}).get("hatch", {}).get("version", {}).get("path")
            if not name or not vpath or "version" not in project.get("dynamic", []):
                raise ReleaseError(
                    f"{rel}/pyproject.toml must take its version from [tool.hatch.version] path "
                    "(dynamic = ['version'])"
                )
            vfile = path / vpath
            found = VERSION_LINE.findall(vfile.read_text()) if vfile.is_file() else []
            if len(found) != 1:
                raise ReleaseError(f"{rel}/{vpath} must hold exactly one __version__ = '...' line")
            requires = [parse_requirement(t) for t in project.get("dependencies", [])]
            for extra in project.get("optional-dependencies", {}).values():
                requires += [parse_requirement(t) for t in extra]
            members[canonical(name)] = Member(
                name=name,
                path=path,
                rel=rel,
                module=Path(vpath).parent.name,
                version_file=vfile,
                version=found[0][1],
                requires=requires,
                scripts=sorted(project.get("scripts", {})),
            )
    return members


def sibling_deps(member: Member, members: dict[str, Member]) -> list[Member]:
    """The workspace members ``member`` depends on, transitively, dependencies first."""
    out: list[Member] = []

    def visit(m: Member) -> None:
        for r in m.requires:
            dep = members.get(r.name)
            if dep is not None and dep not in out and dep is not member:
                visit(dep)
                out.append(dep)

    visit(member)
    return out


def dependents(member: Member, members: dict[str, Member]) -> list[Member]:
    return [m for m in members.values() if any(r.name == member.key for r in m.requires)]


# ---------------------------------------------------------------------------- git


def dirty_files(repo: Path, paths: list[str]) -> list[str]:
    proc = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=repo, capture_output=True, text=True
    )
    if proc.returncode:
        raise ReleaseError(f"{repo} is not a git work tree (a release is tagged from a commit)")
    out = run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", *paths],
        repo,
        what="git status",
    )
    return [line[3:] for line in out.splitlines() if line.strip()]


def tracked_files(repo: Path, rel: str) -> list[str]:
    out = run(["git", "ls-files", "-z", "--", rel], repo, what="git ls-files")
    return [p for p in out.split("\0") if p]


# ---------------------------------------------------------------------------- edits


@dataclass
class Edit:
    path: Path
    old: str
    new: str
    summary: str


def range_pattern(name: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in re.split(r"[-_.]+", name)]
    return re.compile(r"""(["'])(""" + "[-_.]+".join(parts) + r""")\s*~=\s*([^"';,\s\]]+)""", re.I)


def changelog_release(text: str, rel: str, name: str, old: str, new: str, date: str) -> str:
    if not UNRELEASED.search(text):
        raise ReleaseError(f"{rel} has no '## [Unreleased]' section to release from")
    if re.search(rf"^## \[{re.escape(new)}\]", text, re.M):
        raise ReleaseError(f"{rel} already has a '## [{new}]' section")
    text = UNRELEASED.sub(f"## [Unreleased]\n\n## [{new}] - {date}", text, count=1)
    m = UNRELEASED_LINK.search(text)
    if m:
        base = m[1]
        links = (
            f"[Unreleased]: {base}/compare/{name}-v{new}...HEAD\n"
            f"[{new}]: {base}/compare/{name}-v{old}...{name}-v{new}"
        )
        text = text[: m.start()] + links + text[m.end() :]
    return text


def changelog_note(text: str, note: str) -> str | None:
    """Add ``- note`` under ``### Changed`` of ``[Unreleased]``; None if there is no such section."""
    m = UNRELEASED.search(text)
    if not m:
        return None
    nxt = re.compile(r"^## \[", re.M).search(text, m.end())
    end = nxt.start() if nxt else len(text)
    content = text[m.end() : end].strip("\n")
    ch = re.search(r"^### Changed[ \t]*$", content, re.M)
    if ch:
        sub = re.compile(r"^### ", re.M).search(content, ch.end())
        cut = sub.start() if sub else len(content)
        sep = "\n" if content[ch.end() : cut].strip() else "\n\n"
        rest = "\n\n" + content[cut:] if sub else ""
        content = content[:cut].rstrip("\n") + f"{sep}- {note}" + rest
    else:
        content = (content + "\n\n" if content else "") + f"### Changed\n\n- {note}"
    return text[: m.end()] + "\n\n" + content + "\n\n" + text[end:]


def plan_edits(
    pkg: Member, version: str, members: dict[str, Member], repo: Path, date: str
) -> tuple[list[Edit], list[str]]:
    edits: list[Edit] = []
    notes: list[str] = []
    vtext = pkg.version_file.read_text()
    vline = VERSION_LINE.search(vtext)
    assert vline is not None
    new_line = f"__version__ = {vline[1]}{version}{vline[1]}"
    edits.append(
        Edit(
            pkg.version_file,
            vtext,
            vtext[: vline.start()] + new_line + vtext[vline.end() :],
            f"__version__ {pkg.version} -> {version}",
        )
    )
    log = pkg.path / "CHANGELOG.md"
    if not log.is_file():
        raise ReleaseError(f"{pkg.rel}/CHANGELOG.md is missing")
    ltext = log.read_text()
    new_log = changelog_release(
        ltext, f"{pkg.rel}/CHANGELOG.md", pkg.name, pkg.version, version, date
    )
    if re.search(r"^## \[Unreleased\]\s*^## \[", ltext, re.M):
        notes.append(f"{pkg.rel}/CHANGELOG.md: nothing was listed under [Unreleased]")
    edits.append(Edit(log, ltext, new_log, f"## [{version}] - {date}"))

    pattern = range_pattern(pkg.name)
    for dep in dependents(pkg, members):
        toml = dep.path / "pyproject.toml"
        text = toml.read_text()
        wanted = [r for r in dep.requires if r.name == pkg.key]
        for r in wanted:
            if r.specifier != f"~={pkg.version}":
                raise ReleaseError(
                    f"{dep.rel}/pyproject.toml requires {r.text!r}, not "
                    f"'{pkg.name}~={pkg.version}'; fix the range by hand first"
                )
        new_text, n = pattern.subn(lambda m: f"{m[1]}{m[2]}~={version}", text)
        if n != len(wanted):
            raise ReleaseError(
                f"{dep.rel}/pyproject.toml: found {n} '{pkg.name}~=' ranges to rewrite, "
                f"expected {len(wanted)}"
            )
        edits.append(Edit(toml, text, new_text, f"{pkg.name}~={pkg.version} -> ~={version}"))
        dlog = dep.path / "CHANGELOG.md"
        dtext = dlog.read_text() if dlog.is_file() else ""
        noted = changelog_note(dtext, f"Requires `{pkg.name}~={version}`.")
        if noted is None:
            notes.append(f"{dep.rel}/CHANGELOG.md has no [Unreleased] section: not noted there")
        else:
            edits.append(Edit(dlog, dtext, noted, f"[Unreleased]: requires {pkg.name}~={version}"))
    return edits, notes


# ---------------------------------------------------------------------------- artifact checks


def read_metadata(text: str, where: str) -> dict:
    """Parse core metadata; validated by ``packaging.metadata`` when it is installed."""
    msg = email.parser.Parser().parsestr(text)
    info = {
        "name": msg.get("Name"),
        "version": msg.get("Version"),
        "license": msg.get("License-Expression"),
        "license_files": msg.get_all("License-File") or [],
        "urls": dict(
            (k.strip(), v.strip())
            for k, _, v in (u.partition(",") for u in msg.get_all("Project-URL") or [])
        ),
        "requires": [parse_requirement(r) for r in msg.get_all("Requires-Dist") or []],
        "content_type": msg.get("Description-Content-Type") or "",
        "description": msg.get_payload() or msg.get("Description") or "",
        "validated": False,
    }
    try:
        from packaging.metadata import InvalidMetadata, Metadata
    except ImportError:  # pragma: no cover
        return info
    try:
        Metadata.from_email(text, validate=True)
    except (InvalidMetadata, ExceptionGroup) as exc:
        parts = getattr(exc, "exceptions", [exc])
        raise ReleaseError(f"{where}: invalid metadata: {'; '.join(map(str, parts))}") from None
    info["validated"] = True
    return info


def check_metadata(
    info: dict, where: str, pkg: Member, version: str, members: dict[str, Member]
) -> list[str]:
    errors = []
    if canonical(info["name"] or "") != pkg.key:
        errors.append(f"{where}: Name is {info['name']!r}, not {pkg.name!r}")
    if info["version"] != version:
        errors.append(f"{where}: Version is {info['version']!r}, not {version!r}")
    if not info["license"]:
        errors.append(f"{where}: no License-Expression")
    if "LICENSE" not in info["license_files"]:
        errors.append(f"{where}: no License-File: LICENSE")
    for key in URL_KEYS:
        if not info["urls"].get(key, "").startswith("https://"):
            errors.append(f"{where}: no Project-URL {key}")
    if info["content_type"] != "text/markdown" or len(info["description"].strip()) < 20:
        errors.append(f"{where}: the long description (README, text/markdown) is missing")
    for r in info["requires"]:
        sib = members.get(r.name)
        if sib is not None:
            if r.specifier != f"~={sib.version}":
                errors.append(f"{where}: requires {r.text!r}, not '{sib.name}~={sib.version}'")
        elif not has_lower_bound(r.specifier):
            errors.append(f"{where}: requirement {r.text!r} has no lower bound")
    declared = {r.name for r in pkg.requires}
    got = {r.name for r in info["requires"]}
    if declared != got:
        errors.append(f"{where}: Requires-Dist names {sorted(got)} != pyproject {sorted(declared)}")
    return errors


def check_wheel(
    wheel: Path, pkg: Member, version: str, members: dict[str, Member], src_files: list[str]
) -> list[str]:
    info_dir = f"{dist_name(pkg.name)}-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        errors = [f"{wheel.name}: {n} is a cache file" for n in names if is_cache(n)]
        if f"{info_dir}/METADATA" not in names:
            return [*errors, f"{wheel.name}: no {info_dir}/METADATA"]
        info = read_metadata(zf.read(f"{info_dir}/METADATA").decode(), wheel.name)
        errors += check_metadata(info, wheel.name, pkg, version, members)
        need = [f"{info_dir}/licenses/LICENSE", f"{info_dir}/RECORD", f"{pkg.module}/py.typed"]
        need += [f"{pkg.module}/{f}" for f in src_files]
        errors += [f"{wheel.name}: {n} is missing" for n in need if n not in names]
        init = f"{pkg.module}/__init__.py"
        if init in names:
            found = VERSION_LINE.findall(zf.read(init).decode())
            if [v for _, v in found] != [version]:
                errors.append(f"{wheel.name}: {init} says __version__ {found}, not {version!r}")
        if pkg.scripts:
            eps = (
                zf.read(f"{info_dir}/entry_points.txt").decode()
                if f"{info_dir}/entry_points.txt" in names
                else ""
            )
            errors += [
                f"{wheel.name}: console script {s!r} is missing"
                for s in pkg.scripts
                if not re.search(rf"^{re.escape(s)}\s*=", eps, re.M)
            ]
    return errors


def check_sdist(
    sdist: Path, pkg: Member, version: str, members: dict[str, Member], src_files: list[str]
) -> list[str]:
    top = f"{dist_name(pkg.name)}-{version}"
    with tarfile.open(sdist) as tf:
        names = set(tf.getnames())
        errors = [f"{sdist.name}: {n} is a cache file" for n in names if is_cache(n)]
        member = tf.extractfile(f"{top}/PKG-INFO") if f"{top}/PKG-INFO" in names else None
        if member is None:
            return [*errors, f"{sdist.name}: no {top}/PKG-INFO"]
        info = read_metadata(member.read().decode(), sdist.name)
        errors += check_metadata(info, sdist.name, pkg, version, members)
        need = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"]
        need += [f"src/{pkg.module}/py.typed"] + [f"src/{pkg.module}/{f}" for f in src_files]
        errors += [f"{sdist.name}: {n} is missing" for n in need if f"{top}/{n}" not in names]
    return errors


def is_cache(name: str) -> bool:
    return any(part in name for part in CACHE_PARTS)


def install_check(
    repo: Path,
    uv: str,
    pkg: Member,
    version: str,
    wheel: Path,
    siblings: list[Member],
    venv: Path | None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="tag-release-") as tmp_s:
        tmp = Path(tmp_s)
        wheels = []
        for sib in siblings:
            run(
                [uv, "build", "--package", sib.name, "--wheel", "--out-dir", str(tmp / "sib")], repo
            )
            found = sorted((tmp / "sib").glob(f"{dist_name(sib.name)}-{sib.version}-*.whl"))
            if not found:
                raise ReleaseError(f"`uv build --package {sib.name}` made no {sib.version} wheel")
            wheels.append(found[0])
        # The lock's resolution of exactly the package's declared dependencies: no index
        # look-up, so uv's cache serves every wheel (hardlinked) and UV_OFFLINE=1 works.
        pylock = tmp / "pylock.toml"
        run(
            [uv, "export", "--frozen", "--no-dev", "--no-emit-workspace", "--format",
             "pylock.toml", "--package", pkg.name, "-o", str(pylock)],
            repo,
        )  # fmt: skip
        venv = venv or tmp / "venv"
        run([uv, "venv", "--quiet", str(venv), "--python", sys.executable], tmp)
        py = venv / "bin" / "python"
        run(
            [uv, "pip", "install", "--python", str(py), "-r", str(pylock)],
            tmp,
            what=f"uv pip install the locked dependencies of {pkg.name} into a clean venv",
        )
        run(
            [uv, "pip", "install", "--python", str(py), "--no-deps", str(wheel)]
            + [str(w) for w in wheels],
            tmp,
            what=f"uv pip install {wheel.name} into the clean venv",
        )
        # Every Requires-Dist of the wheels is met by the venv, which holds nothing else.
        run([uv, "pip", "check", "--python", str(py)], tmp, what="uv pip check")
        code = (
            "import importlib.metadata as md\n"
            f"import {pkg.module} as m\n"
            f"print(m.__version__, md.version({pkg.name!r}))\n"
        )
        out = run([str(py), "-I", "-c", code], tmp, what=f"import {pkg.module} in the clean venv")
        if out.split() != [version, version]:
            raise ReleaseError(
                f"the clean venv imports {pkg.module} as {out.strip()!r}, not {version}"
            )


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Bump, lock, build and check one package of the TAG workspace for release.",
        epilog="Example: uv run scripts/release.py tag-kernels 0.2.0 --dry-run",
    )
    ap.add_argument("package", help="workspace member to release, e.g. tag-kernels")
    ap.add_argument("version", help="new version, canonical PEP 440, e.g. 0.2.0 or 0.2.0rc1")
    ap.add_argument(
        "--repo",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="workspace root (default: the repo holding this script)",
    )
    ap.add_argument(
        "--out-dir", type=Path, help="where the sdist and wheel go (default: REPO/dist)"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="check and print the plan; write nothing"
    )
    ap.add_argument(
        "--no-install-check", action="store_true", help="skip the clean-venv install and import"
    )
    ap.add_argument(
        "--keep-venv",
        type=Path,
        metavar="DIR",
        help="make the clean venv at DIR (must not exist) and keep it",
    )
    ap.add_argument("--date", help="release date for the CHANGELOG (default: today, YYYY-MM-DD)")
    args = ap.parse_args(argv)
    try:
        return release(args)
    except ReleaseError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


def release(args: argparse.Namespace) -> int:
    repo = args.repo.resolve()
    if not repo.is_dir():
        raise ReleaseError(f"--repo {args.repo} is not a directory")
    members = load_workspace(repo)
    pkg = members.get(canonical(args.package))
    if pkg is None:
        raise ReleaseError(
            f"unknown package {args.package!r}; choose one of: {', '.join(sorted(members))}"
        )
    version = args.version
    check_version_string(version)
    if not version_above(version, pkg.version):
        raise ReleaseError(f"version {version} is not above {pkg.name}'s current {pkg.version}")
    date = args.date or dt.date.today().isoformat()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise ReleaseError(f"--date {date!r} is not YYYY-MM-DD")
    if args.keep_venv and args.keep_venv.exists():
        raise ReleaseError(f"--keep-venv {args.keep_venv} already exists")
    siblings = sibling_deps(pkg, members)
    deps_on = dependents(pkg, members)

    watched = [pkg.rel, "uv.lock", "pyproject.toml"]
    watched += [s.rel for s in siblings]
    watched += [f"{d.rel}/{f}" for d in deps_on for f in ("pyproject.toml", "CHANGELOG.md")]
    dirty = dirty_files(repo, watched)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise ReleaseError(f"uncommitted changes in {shown}; commit or stash them first")

    edits, notes = plan_edits(pkg, version, members, repo, date)
    out_dir = (args.out_dir or repo / "dist").resolve()
    tag = f"{pkg.name}-v{version}"
    wheel = out_dir / f"{dist_name(pkg.name)}-{version}-py3-none-any.whl"
    sdist = out_dir / f"{dist_name(pkg.name)}-{version}.tar.gz"
    changed = [e.path.relative_to(repo).as_posix() for e in edits] + ["uv.lock"]

    head = "would edit" if args.dry_run else "editing"
    print(f"{pkg.name} {pkg.version} -> {version}")
    for e in edits:
        print(f"  {head} {e.path.relative_to(repo)}: {e.summary}")
    for n in notes:
        print(f"  note: {n}")
    if args.dry_run:
        print("  would run: uv lock")
        print(f"  would run: uv build --package {pkg.name} --out-dir {shown_path(out_dir, repo)}")
        print_next(repo, pkg, version, tag, changed, wheel, sdist, deps_on)
        return 0

    uv = find_uv()
    for e in edits:
        e.path.write_text(e.new)
    try:
        run([uv, "lock"], repo)
        print("  locked: uv lock")
        for stale in (wheel, sdist):
            stale.unlink(missing_ok=True)
        run([uv, "build", "--package", pkg.name, "--out-dir", str(out_dir)], repo)
        for art in (wheel, sdist):
            if not art.is_file():
                raise ReleaseError(f"`uv build --package {pkg.name}` did not make {art.name}")
        print(f"  built: {shown_path(sdist, repo)}, {shown_path(wheel, repo)}")

        src_rel = pkg.version_file.parent.relative_to(repo).as_posix()
        src_files = [p[len(src_rel) + 1 :] for p in tracked_files(repo, src_rel)]
        members = load_workspace(repo)  # the bumped versions
        pkg = members[pkg.key]
        errors = check_wheel(wheel, pkg, version, members, src_files)
        errors += check_sdist(sdist, pkg, version, members, src_files)
        if errors:
            raise ReleaseError(
                f"{len(errors)} problem(s) in the artifacts: " + "; ".join(errors[:10])
            )
        print(
            f"  checked: metadata, LICENSE, py.typed and {len(src_files)} source files "
            "in the wheel and the sdist"
        )
        if not args.no_install_check:
            siblings = [members[s.key] for s in siblings]
            install_check(repo, uv, pkg, version, wheel, siblings, args.keep_venv)
            extra = f" + {', '.join(s.name for s in siblings)}" if siblings else ""
            print(
                f"  installed: a clean venv installs {wheel.name}{extra} and imports {pkg.module}"
            )
    except ReleaseError as exc:
        raise ReleaseError(
            f"{exc}\n    (edited: {', '.join(changed)}; `git checkout -- <file>` undoes them)"
        ) from None
    print_next(repo, pkg, version, tag, changed, wheel, sdist, deps_on)
    return 0


def shown_path(path: Path, repo: Path) -> str:
    try:
        return path.relative_to(repo).as_posix()
    except ValueError:
        return str(path)


def print_next(repo, pkg, version, tag, changed, wheel, sdist, deps_on) -> None:
    print(f"tag: {tag}")
    print(f"next, from {repo}:")
    print(f"  git commit -m 'Release {pkg.name} {version}' -- {' '.join(changed)}")
    print(f"  git tag -a {tag} -m '{pkg.name} {version}'")
    print(f"  git push origin HEAD {tag}")
    print(f"  uv publish {shown_path(wheel, repo)} {shown_path(sdist, repo)}")
    if deps_on:
        names = ", ".join(d.name for d in deps_on)
        print(f"  then release {names}: they now require {pkg.name}~={version}")


if __name__ == "__main__":
    sys.exit(main())
