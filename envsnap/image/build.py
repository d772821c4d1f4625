"""``envsnap build``: a stored run's manifest -> lock files -> Dockerfile -> image pinned by digest.

An image is built once per env_id: a later build of a run in the same environment finds the
recorded image (``<store>/images/<env-id>.toml``) on the engine and reuses it without building.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envsnap.errors import UsageError
from envsnap.image.plan import (
    BaseChoice,
    ImagePlan,
    choose_base,
    image_tag,
    plan_image,
    render_dockerfile,
    render_tool_dockerfile,
    tool_tag,
    write_context,
)
from envsnap.manifest import Conda, Manifest, Package, Python
from envsnap.store import Store, StoredRun
from envsnap.version import __version__

if TYPE_CHECKING:
    from envsnap.image.dockeroutput import ImageInfo
    from envsnap.image.engine import Engine
    from envsnap.locking.model import HashSource, LockResult

IMAGE_FILE = "image.toml"
IMAGE_SCHEMA = "envsnap.image/1"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """What the user asked of the build."""

    base: str = ""
    config_base: str = ""
    push: str = ""
    allow_unlocked: bool = False
    rebuild: bool = False
    cache_dir: Path | None = None
    # Where the packages of base images, read once per pinned base, are kept (see
    # base_packages); None: read every time.
    base_cache_dir: Path | None = None
    # The repository the run was captured in: the project's own editable packages are built
    # from its recorded commit (and diff).
    repo_root: Path | None = None


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """The result of ``envsnap build``: what image.toml records."""

    run_id: str
    env_id: str
    reference: str
    image_id: str
    base: str
    base_reason: str
    built: str
    seconds: float
    reused: bool
    registry_digest: str = ""
    pulled: bool = False  # reused from the registry digest recorded by --push
    unlocked: tuple[str, ...] = ()
    # Packages of the lock the base image provides at the recorded version: linked into the
    # venv from the base, not installed (the run's lock files still list them).
    base_provided: tuple[str, ...] = ()
    elapsed: float = 0.0  # what this command took (a reuse, a pull or the build itself)

    def to_data(self) -> dict[str, Any]:
        """What image.toml records: what was built, from what, and when. Whether this command
        reused it (``reused``, ``pulled``, ``seconds`` of a reuse) is said on output only."""
        data: dict[str, Any] = {"schema": IMAGE_SCHEMA}
        data.update(dataclasses.asdict(self))
        for transient in ("run_id", "reused", "pulled", "elapsed"):
            data.pop(transient)
        data["unlocked"] = list(self.unlocked)
        data["base_provided"] = list(self.base_provided)
        return data

    def to_json(self) -> dict[str, Any]:
        """``build --json``: the record plus what this command did."""
        return {
            **self.to_data(),
            "run_id": self.run_id,
            "reused": self.reused,
            "pulled": self.pulled,
            "elapsed": self.elapsed,
        }


def build_run(
    run: StoredRun,
    store: Store,
    engine: Engine,
    options: BuildOptions,
    *,
    env: Mapping[str, str],
    source: HashSource | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuiltImage:
    """Build (or reuse) the image for a stored run and record it in image.toml."""
    started = time.monotonic()
    manifest = run.manifest
    if manifest.conda.present and manifest.conda.packages:
        raise UsageError(
            f"run {manifest.run_id} lives in a conda environment, which envsnap cannot build yet",
            hint="build from a run captured in a venv, or use envsnap lock for the conda lock",
        )
    cached = None if options.rebuild else _recorded_image(store, run, engine)
    if cached is not None and not _same_base(cached.base, options.base or options.config_base):
        cached = None  # another base was asked for than the recorded image was built on
    if cached is not None:
        # The environment was locked and built before: no lock, no index, no build.
        _refuse_unlocked(cached.unlocked, options)
        built = dataclasses.replace(
            cached, run_id=manifest.run_id, elapsed=round(time.monotonic() - started, 3)
        )
    else:
        # Imported here: a reuse neither locks nor asks the index.
        from envsnap.locking.files import lock_run
        from envsnap.locking.index import SimpleIndexClient
        from envsnap.locking.model import SUMMARY_FILE
        from envsnap.locking.plan import lock_packages

        choice = choose_base(manifest, cli_base=options.base, config_base=options.config_base)
        base = engine.resolve_digest(choice.reference)
        # A base without Python provides no packages (and could not be asked for them).
        provided = (
            {} if choice.adds_python else base_packages(engine, base, cache=options.base_cache_dir)
        )
        source = source or SimpleIndexClient(cache_dir=options.cache_dir)
        if not (run.directory / SUMMARY_FILE).is_file():
            # The run's own lock files are written once, by the first lock or build, and never
            # rewritten: what this base provides is recorded in image.toml instead.
            lock_run(run, store, source=source)
        lock = lock_packages(manifest, source, provided=provided)
        unlocked = tuple(f"{n.name} {n.version}: {n.reason}" for n in lock.unlockable)
        _refuse_unlocked(unlocked, options)
        built = _build(
            run,
            engine,
            choice,
            base,
            lock,
            unlocked,
            env=env,
            source=source,
            options=options,
            on_line=on_line,
        )
        seconds = round(time.monotonic() - started, 3)
        built = dataclasses.replace(built, seconds=seconds, elapsed=seconds)
        replaced = _recorded_image_id(store, manifest.env_id)
        _record_env_image(store, built)
        if replaced and replaced != built.image_id:
            _remove_replaced(engine, replaced)
    if options.push:
        built = _push(engine, built, options.push)
        _record_env_image(store, built)
    _write_image_toml(store, run.directory, built)
    return built


def _same_base(built_on: str, asked: str) -> bool:
    """Whether an image built on ``built_on`` (pinned) serves a build that asks for ``asked``:
    nothing asked, the same digest, or, for a tag, the same repository (the tag was resolved
    when the image was built; a rebuild resolves it again)."""
    from envsnap.imageref import is_reference, parse_reference

    if not asked:
        return True
    if not (is_reference(built_on) and is_reference(asked)):
        return False
    built, wanted = parse_reference(built_on), parse_reference(asked)
    if wanted.digest:
        return wanted.digest == built.digest
    return wanted.familiar == built.familiar


def _refuse_unlocked(unlocked: tuple[str, ...], options: BuildOptions) -> None:
    if unlocked and not options.allow_unlocked:
        raise UsageError(
            f"{len(unlocked)} package(s) cannot be locked: {'; '.join(unlocked[:3])}"
            + ("; ..." if len(unlocked) > 3 else ""),
            hint="see lock.toml in the run directory, or pass --allow-unlocked to build anyway",
        )


# Run by the base image's Python: every distribution it sees, as {normalised name: version}.
_LIST_PACKAGES = (
    "import importlib.metadata as m, json, re\n"
    "found = {}\n"
    "for d in m.distributions():\n"
    "    name = re.sub(r'[-_.]+', '-', d.metadata['Name'] or '').lower()\n"
    "    if name: found.setdefault(name, d.version)\n"
    "print('ENVSNAP-PACKAGES ' + json.dumps(found, sort_keys=True))\n"
)


def base_packages(
    engine: Engine, base: str, *, python: str = "python3", cache: Path | None = None
) -> dict[str, str]:
    """The Python packages the base image provides, read by its own interpreter in a throwaway
    container (no network). With ``cache``, what was read for a base pinned by digest is kept
    there and read from it next time: an image named by digest cannot change."""
    import json

    from envsnap.image.dockeroutput import BuildError
    from envsnap.image.plan import is_pinned

    cached = None
    if cache is not None and is_pinned(base):
        cached = cache / f"{hashlib.sha256(f'{base} {python}'.encode()).hexdigest()}.json"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(cached.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("base") == base:
                packages = data.get("packages")
                if isinstance(packages, dict):
                    return {str(k): str(v) for k, v in packages.items()}
    lines: list[str] = []
    name = f"envsnap-base-packages-{os.urandom(4).hex()}"
    code = engine.run(base, [python, "-I", "-c", _LIST_PACKAGES], name=name, on_output=lines.append)
    found = [line for line in lines if line.startswith("ENVSNAP-PACKAGES ")]
    if code != 0 or not found:
        tail = " ".join(" ".join(lines[-3:]).split())[-300:]
        raise BuildError(
            f"the base image {base} has no working {python} (exit code {code}"
            + (f": {tail}" if tail else "")
            + ")",
            hint="choose a base image with Python (--base or [tool.envsnap] base-image)",
        )
    data = json.loads(found[-1].split(" ", 1)[1])
    packages = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    if cached is not None:
        _write_cache_file(cached, {"base": base, "packages": packages})
    return packages


def _write_cache_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write a cache file whole (another build may read it at the same time); a cache that
    cannot be written is only slower next time."""
    import json

    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(dict(data), sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def _build(
    run: StoredRun,
    engine: Engine,
    choice: BaseChoice,
    base: str,
    lock: LockResult,
    unlocked: tuple[str, ...],
    *,
    env: Mapping[str, str],
    source: HashSource | None,
    options: BuildOptions,
    on_line: Callable[[str], None] | None,
) -> BuiltImage:
    from envsnap.template import read_template_bytes

    manifest = run.manifest
    venv_script = read_template_bytes("envsnap_venv.py")
    with tempfile.TemporaryDirectory(prefix="envsnap-build-") as tmp:
        wheel_name, wheel = build_tool_wheel()
        files = {
            "requirements.lock.txt": lock.requirements.encode(),
            "base-provided.txt": "".join(f"{name}\n" for name in lock.base_provided).encode(),
            "envsnap_venv.py": venv_script,
        }
        if lock.vcs_requirements:
            files["requirements.vcs.txt"] = lock.vcs_requirements.encode()
        editables = project_editables(manifest)
        if editables:
            files.update(_project_files(run, options, env, Path(tmp) / "project"))
        plan = plan_image(
            manifest,
            base=base,
            tool_wheel=wheel_name,
            has_vcs=bool(lock.vcs_requirements),
            envsnap_version=__version__,
            editables=editables,
            adds_python=choice.adds_python,
        )
        secrets = _pip_secrets(env, Path(tmp))
        tool = _tool_image(
            engine,
            plan,
            wheel,
            lock_tool_requirements(source, cache_dir=options.cache_dir),
            secrets=secrets,
            scratch=Path(tmp) / "tool",
            on_line=on_line,
        )
        files["Dockerfile"] = render_dockerfile(plan).encode()
        context = Path(tmp) / "context"
        context.mkdir()
        write_context(context, files)
        tag = image_tag(manifest)
        image_id = engine.build(
            context=context,
            dockerfile=context / "Dockerfile",
            tag=tag,
            secrets=secrets,
            build_args={"ENVSNAP_TOOL": tool},
            # --rebuild means from scratch: a cached layer would hide an index that no longer
            # serves a pinned file, which is what a rebuild is there to find out. envsnap's own
            # environment (the tool image, shared by every environment on the base) is kept.
            no_cache=options.rebuild,
            on_line=on_line,
        )
    return BuiltImage(
        run_id=manifest.run_id,
        env_id=manifest.env_id,
        reference=tag,
        image_id=image_id,
        base=base,
        base_reason=choice.reason,
        built=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        seconds=0.0,
        reused=False,
        unlocked=unlocked,
        base_provided=lock.base_provided,
    )


def _tool_image(
    engine: Engine,
    plan: ImagePlan,
    wheel: bytes,
    tool_lock: str,
    *,
    secrets: Mapping[str, Path],
    scratch: Path,
    on_line: Callable[[str], None] | None,
) -> str:
    """The tag of envsnap's own environment on the plan's base, built when the engine lacks it.

    Its tag is a hash of the base and everything that goes into it (Dockerfile, envsnap's wheel,
    its hash-locked dependencies), so a present image with that tag is the one this build would
    make: every environment on the base starts from it, and installing envsnap leaves the cold
    build of each new environment."""
    scratch.mkdir()
    files = {
        "Dockerfile": render_tool_dockerfile(plan).encode(),
        f"tool/{plan.tool_wheel}": wheel,
        "tool/requirements.lock.txt": tool_lock.encode(),
    }
    tag = tool_tag(plan.base, write_context(scratch, files))
    if engine.inspect_image(tag) is None:
        engine.build(
            context=scratch,
            dockerfile=scratch / "Dockerfile",
            tag=tag,
            secrets=secrets,
            build_args={"ENVSNAP_BASE": plan.base},
            on_line=on_line,
        )
    return tag


def project_editables(manifest: Manifest) -> tuple[str, ...]:
    """Paths (relative to the repository) of the project's own editable packages."""
    return tuple(
        sorted(
            {
                p.path
                for p in manifest.python.packages
                if p.source == "editable" and p.reinstallable and p.path
            }
        )
    )


def _project_files(
    run: StoredRun, options: BuildOptions, env: Mapping[str, str], scratch: Path
) -> dict[str, bytes]:
    """The project's tracked files at the recorded commit plus diff, as ``project/...`` context
    entries, for its editable packages."""
    from envsnap.checkout import materialize

    names = ", ".join(p.name for p in run.manifest.python.packages if p.source == "editable")
    if options.repo_root is None:
        raise UsageError(
            f"run {run.manifest.run_id} has the project installed editable ({names}), which is "
            "built from its repository, and this is not inside one",
            hint="run envsnap build (or rerun) from a clone of the project",
        )
    patch = run.diff_path.read_bytes() if run.diff_path.is_file() else None
    materialize(options.repo_root, run.manifest.git, patch, scratch, env=env)
    files: dict[str, bytes] = {}
    for path in sorted(scratch.rglob("*")):
        relative = path.relative_to(scratch)
        if relative.parts[0] == ".git" or path.is_symlink() or not path.is_file():
            continue
        files[f"project/{relative.as_posix()}"] = path.read_bytes()
    return files


def _push(engine: Engine, built: BuiltImage, repository: str) -> BuiltImage:
    from envsnap.imageref import parse_reference

    tag = parse_reference(built.reference, "the built image").tag
    pushed_to = parse_reference(repository, "--push")
    if pushed_to.tag or pushed_to.digest:
        raise UsageError(
            f"--push {repository!r} names a tag or digest",
            hint="give the repository only, e.g. registry.example:5000/team/envs",
        )
    target = str(pushed_to.with_tag(tag))
    engine.tag(built.reference, target)
    return dataclasses.replace(built, registry_digest=engine.push(target))


# --- the image index by env_id ------------------------------------------------------------------


def _image_record(store: Store, env_id: str) -> dict[str, Any]:
    """The environment's recorded image as data; empty when none or unreadable."""
    import tomllib

    data = store.image_record(env_id)
    try:
        return tomllib.loads(data.decode("utf-8")) if data is not None else {}
    except (UnicodeDecodeError, ValueError):
        return {}


def _recorded_image(store: Store, run: StoredRun, engine: Engine) -> BuiltImage | None:
    """The image built earlier for this env_id, when the engine still has it or can pull it by
    its registry digest: from this store's images index, else from the run's own image.toml (a
    run pulled from a registry brings the record of the image pushed beside it)."""
    import tomllib

    manifest = run.manifest
    data = _image_record(store, manifest.env_id)
    if not data:
        try:
            data = tomllib.loads((run.directory / IMAGE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
    if data.get("schema") != IMAGE_SCHEMA or data.get("env_id") != manifest.env_id:
        return None
    reference = str(data.get("reference", ""))
    info = engine.inspect_image(reference)
    pulled = False
    # Absent, or the tag names another build of this environment (this engine built or pulled
    # one before): the recorded image, pulled by its digest, is the one this run was built in.
    if (info is None or info.id != data.get("image_id")) and data.get("registry_digest"):
        info, pulled = _pull_recorded(engine, str(data["registry_digest"]), reference), True
    if info is None or info.id != data.get("image_id"):
        return None
    fields = {f.name for f in dataclasses.fields(BuiltImage)}
    fields -= {"run_id", "reused", "pulled", "elapsed"}
    values = {k: v for k, v in data.items() if k in fields}
    values["unlocked"] = tuple(values.get("unlocked", ()))
    values["base_provided"] = tuple(values.get("base_provided", ()))
    values.update(run_id=manifest.run_id, reused=True, pulled=pulled)
    try:
        return BuiltImage(**values)
    except TypeError:
        return None


def _pull_recorded(engine: Engine, registry_ref: str, reference: str) -> ImageInfo | None:
    """The image pushed earlier, pulled by its digest and tagged as built; None when the
    registry no longer has it (then it is built again)."""
    from envsnap.image.dockeroutput import ImageNotFoundError
    from envsnap.image.plan import check_reference, is_pinned

    if not is_pinned(registry_ref):
        return None
    check_reference(registry_ref, "the recorded registry digest")
    try:
        engine.pull(registry_ref)
    except ImageNotFoundError:
        return None
    engine.tag(registry_ref, reference)
    return engine.inspect_image(reference)


def _recorded_image_id(store: Store, env_id: str) -> str:
    return str(_image_record(store, env_id).get("image_id", ""))


def _remove_replaced(engine: Engine, image_id: str) -> None:
    """A rebuild moved the environment's tag to a new image; the old one, now untagged, goes
    too (in the background: the build is done), unless something still uses it (a container,
    another tag): then it stays."""
    from envsnap.image.dockeroutput import EngineError

    info = engine.inspect_image(image_id)
    if info is None or info.repo_tags:
        return
    with contextlib.suppress(EngineError):
        engine.remove_image_later(image_id)


def _record_env_image(store: Store, built: BuiltImage) -> None:
    """Record the environment's image, and bring every run's image.toml of that environment up
    to date with it (a rebuild for one run replaces the image all of them name)."""
    text = _toml(built.to_data())
    store.write_image_record(built.env_id, text)
    for run_dir in _runs_naming_env(store, built.env_id):
        store.write_run_files(run_dir, {IMAGE_FILE: text})


def _runs_naming_env(store: Store, env_id: str) -> list[Path]:
    """Run directories whose image.toml records the environment ``env_id``."""
    import tomllib

    found = []
    for run_id in store.run_ids():
        path = store.runs_dir / run_id / IMAGE_FILE
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if data.get("env_id") == env_id:
            found.append(path.parent)
    return found


def _write_image_toml(store: Store, run_dir: Path, built: BuiltImage) -> None:
    """The run's image.toml: the environment's record, written when it differs."""
    text = _toml(built.to_data())
    try:
        if (run_dir / IMAGE_FILE).read_bytes() == text:
            return
    except OSError:
        pass
    store.write_run_files(run_dir, {IMAGE_FILE: text})


def _toml(data: Mapping[str, Any]) -> bytes:
    import tomli_w

    return tomli_w.dumps(dict(data)).encode("utf-8")


# --- index access inside the build ---------------------------------------------------------------


def _pip_prefix(env: Mapping[str, str]) -> Path:
    """The environment whose own pip.conf the user's pip reads: the activated one, else ours."""
    import sys

    return Path(env.get("VIRTUAL_ENV") or env.get("CONDA_PREFIX") or sys.prefix)


def _pip_secrets(env: Mapping[str, str], tmp: Path) -> dict[str, Path]:
    """The host's CA bundle and pip configuration, passed as BuildKit secrets (never a layer).

    The configuration is what the host's pip would see: all its files merged in pip's order
    with the PIP_* variables on top. Missing ones are passed as empty files, so the
    Dockerfile's secret mounts always resolve.
    """
    from envsnap.pipconf import merged_pip_config, pip_config_files

    empty = tmp / "empty"
    empty.write_bytes(b"")
    ca = next(
        (
            Path(env[name])
            for name in ("ENVSNAP_PIP_CERT", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
            if env.get(name) and Path(env[name]).is_file()
        ),
        None,
    )
    if ca is None and Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
    conf = None
    text = merged_pip_config(env, pip_config_files(env, _pip_prefix(env)))
    if text:
        conf = tmp / "pip.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # may hold index tokens
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    return {"pip-ca": ca or empty, "pip-conf": conf or empty}


# --- envsnap itself in the image ----------------------------------------------------------------


def build_tool_wheel() -> tuple[str, bytes]:
    """A wheel of the running envsnap, made from its installed files (byte-stable).

    Works however envsnap was installed (index, local, editable): the package directory is
    zipped with fixed times and the metadata written afresh.
    """
    version = __version__
    package_dir = Path(__file__).resolve().parents[1]  # envsnap/, this file is envsnap/image/
    entries: dict[str, bytes] = {}
    for path in sorted(package_dir.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        entries[f"envsnap/{path.relative_to(package_dir).as_posix()}"] = path.read_bytes()
    dist_info = f"envsnap-{version}.dist-info"
    requires = "".join(f"Requires-Dist: {name}=={v}\n" for name, v in _tool_dependencies())
    entries[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: envsnap\nVersion: {version}\n"
        f"Requires-Python: >=3.11\n{requires}"
    ).encode()
    entries[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: envsnap\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entries[f"{dist_info}/entry_points.txt"] = b"[console_scripts]\nenvsnap = envsnap.cli:main\n"
    record_lines = [
        f"{name},sha256={_urlsafe_digest(data)},{len(data)}" for name, data in entries.items()
    ]
    record_lines.append(f"{dist_info}/RECORD,,")
    entries[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    return f"envsnap-{version}-py3-none-any.whl", buffer.getvalue()


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _tool_dependencies() -> list[tuple[str, str]]:
    """envsnap's runtime dependencies, and theirs in turn, at the versions installed beside it:
    the image installs them with --no-deps from a hash lock, so the whole closure must be named
    (``requests`` needs ``urllib3``, which envsnap push and pull use inside the image). A
    requirement behind an extra, or one not installed here (another platform's), is left out."""
    from importlib import metadata

    from envsnap.distnames import normalize_name

    found: dict[str, tuple[str, str]] = {}
    pending = ["envsnap"]
    while pending:
        for requirement in metadata.requires(pending.pop()) or []:
            if "extra ==" in requirement:
                continue
            name = requirement.split(";")[0].strip()
            for stop in "<>=!~[ (@":
                name = name.split(stop)[0]
            key = normalize_name(name.strip())
            if not key or key in found or key == "envsnap":
                continue
            try:
                found[key] = (key, metadata.version(key))
            except metadata.PackageNotFoundError:
                continue
            pending.append(key)
    return sorted(found.values())


def lock_tool_requirements(source: HashSource | None, *, cache_dir: Path | None) -> str:
    """Hash-locked requirements for envsnap's own dependencies in the image."""
    from envsnap.locking.index import SimpleIndexClient
    from envsnap.locking.plan import lock_packages
    from envsnap.manifest import Tool

    packages = tuple(Package(name=name, version=version) for name, version in _tool_dependencies())
    manifest = Manifest(
        run_id="envsnap-tool",
        created="",
        tool=Tool(version="0"),
        python=Python(packages=packages),
        conda=Conda(),
    )
    result = lock_packages(manifest, source or SimpleIndexClient(cache_dir=cache_dir))
    if result.unlockable:
        notes = "; ".join(f"{n.name}: {n.reason}" for n in result.unlockable)
        raise UsageError(
            f"envsnap's own dependencies cannot be locked ({notes})", hint="check the index"
        )
    return result.requirements
