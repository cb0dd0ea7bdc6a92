"""A model store: a folder of named models, each with numbered versions and aliases.

Layout on disk::

    <root>/<name>/manifest.json        versions, aliases and alias history
    <root>/<name>/<version>/model.mls  one immutable model file per version
    <root>/<name>/.lock                fcntl lock taken by every manifest update

Every write is atomic: files are written under a temporary name, fsync'ed and
renamed into place, and the containing directory is fsync'ed. A process killed
at any point leaves the store readable, serving the state before the write.
Readers never take the lock; they only ever see a complete manifest.

A version exists once the manifest lists it; a version directory that the
manifest does not list (a publish killed between the two renames) is ignored
and its number is never reused.

An alias is only moved to a version that can take its clients' traffic (see
mlserve._compatibility): publish with an alias, set_alias and canary splits are
refused with an IncompatibleModelError, and nothing changes, unless force=True.
A rollback is never refused: it restores what the alias served before.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from mlserve._compatibility import compatibility_problems
from mlserve._errors import MLServeError

__all__ = [
    "AliasTarget",
    "IncompatibleModelError",
    "Manifest",
    "ModelNotFoundError",
    "ModelStore",
    "StoreError",
    "VersionInUseError",
    "compatibility_problems",
    "primary_version",
]

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.mls"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
MANIFEST_FORMAT = 1
ALIAS_HISTORY_LIMIT = 100
LATEST = "latest"
STALE_STAGING_SECONDS = 24 * 3600

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StoreError(MLServeError):
    """A model store operation was refused or the store is inconsistent."""


class ModelNotFoundError(StoreError, LookupError):
    """No such model, version or alias in the store."""


class VersionInUseError(StoreError):
    """A version cannot be deleted while an alias points to it."""


class IncompatibleModelError(StoreError):
    """An alias was not moved: the version(s) differ from what it serves (see ``problems``)."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class AliasTarget:
    """One version an alias points to, with its share of the traffic."""

    version: int
    weight: float = 1.0


@dataclass(frozen=True)
class Manifest:
    """An immutable snapshot of one model's manifest."""

    name: str
    versions: Mapping[int, Mapping[str, Any]]
    aliases: Mapping[str, tuple[AliasTarget, ...]]
    alias_history: Mapping[str, tuple[tuple[AliasTarget, ...], ...]]
    next_version: int
    #: alias -> the version that gets a copy of the alias's requests (shadow traffic)
    shadows: Mapping[str, int] = field(default_factory=dict)

    @property
    def latest(self) -> int | None:
        """The highest published version, or None when there is none."""
        return max(self.versions) if self.versions else None

    def aliases_of(self, version: int) -> list[str]:
        """The aliases whose targets include ``version``."""
        return sorted(
            alias
            for alias, targets in self.aliases.items()
            if any(t.version == version for t in targets)
        )

    def to_json(self) -> dict[str, Any]:
        shadows = {"shadows": dict(sorted(self.shadows.items()))} if self.shadows else {}
        return {
            **shadows,
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "next_version": self.next_version,
            "versions": {str(v): dict(info) for v, info in sorted(self.versions.items())},
            "aliases": {a: _targets_to_json(t) for a, t in sorted(self.aliases.items())},
            "alias_history": {
                a: [_targets_to_json(t) for t in hist]
                for a, hist in sorted(self.alias_history.items())
                if hist
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], name: str) -> "Manifest":
        if data.get("format") != MANIFEST_FORMAT:
            raise StoreError(
                f"manifest of model {name!r} has format {data.get('format')!r}; "
                f"this version of mlserve reads format {MANIFEST_FORMAT}"
            )
        return cls(
            name=name,
            versions={int(v): info for v, info in data.get("versions", {}).items()},
            aliases={a: _targets_from_json(t) for a, t in data.get("aliases", {}).items()},
            alias_history={
                a: tuple(_targets_from_json(t) for t in hist)
                for a, hist in data.get("alias_history", {}).items()
            },
            next_version=int(data.get("next_version", 1)),
            shadows={str(a): int(v) for a, v in (data.get("shadows") or {}).items()},
        )

    @classmethod
    def empty(cls, name: str) -> "Manifest":
        return cls(name=name, versions={}, aliases={}, alias_history={}, next_version=1)


def _targets_to_json(targets: tuple[AliasTarget, ...]) -> list[dict[str, Any]]:
    return [{"version": t.version, "weight": t.weight} for t in targets]


def _targets_from_json(items: list[Mapping[str, Any]]) -> tuple[AliasTarget, ...]:
    return tuple(AliasTarget(int(i["version"]), float(i.get("weight", 1.0))) for i in items)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def validate_name(value: str, what: str = "model name") -> str:
    """Return ``value`` if it is a valid model or alias name, else raise StoreError."""
    if not isinstance(value, str) or not _NAME_PATTERN.fullmatch(value):
        raise StoreError(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def validate_alias(alias: str) -> str:
    validate_name(alias, "alias")
    if alias.isdigit():
        raise StoreError(f"invalid alias {alias!r}: an alias cannot be a number")
    if alias == LATEST:
        raise StoreError(f"invalid alias {alias!r}: 'latest' always means the newest version")
    return alias


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsync'ed temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _jsonable(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The model metadata as plain JSON values (classes may be numpy scalars)."""
    return json.loads(json.dumps(dict(metadata), default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class ModelStore:
    """A folder of versioned models with aliases, safe for concurrent writers.

    Parameters
    ----------
    root : str or path
        The store's folder; created if missing.

    Examples
    --------
    >>> store = ModelStore("models/")
    >>> store.publish("churn", "churn.mls", alias="production")
    1
    >>> model = store.get("churn", alias="production")
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self._loaded: dict[tuple[str, int], Any] = {}
        self._loaded_lock = threading.Lock()
        self._random = random.Random()

    def __repr__(self) -> str:
        """``ModelStore('/path')`` and one line per model: versions and aliases."""
        from ._display import store_repr

        return store_repr(self)

    def _repr_html_(self) -> str:
        """A table of the models, their versions and aliases (Jupyter)."""
        from ._display import store_html

        return store_html(self)

    # ---------------------------------------------------------------- reading

    def names(self) -> list[str]:
        """The names of all models that have a manifest, sorted."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return sorted(
            e.name
            for e in entries
            if e.is_dir()
            and _NAME_PATTERN.fullmatch(e.name)
            and os.path.exists(os.path.join(e.path, MANIFEST_FILE))
        )

    def manifest(self, name: str) -> Manifest:
        """Read the current manifest of model ``name`` from disk."""
        validate_name(name)
        path = self.root / name / MANIFEST_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ModelNotFoundError(f"model {name!r} not found in the store") from None
        except (ValueError, OSError) as exc:
            raise StoreError(f"manifest of model {name!r} is unreadable: {exc}") from exc
        return Manifest.from_json(data, name)

    def manifest_token(self, name: str) -> tuple[int, int, int] | None:
        """A cheap value that changes whenever the manifest of ``name`` is rewritten."""
        try:
            st = os.stat(self.root / name / MANIFEST_FILE)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def versions(self, name: str) -> list[int]:
        """The published versions of ``name``, ascending."""
        return sorted(self.manifest(name).versions)

    def aliases(self, name: str) -> dict[str, list[AliasTarget]]:
        """The aliases of ``name`` and the versions (with weights) they point to."""
        return {a: list(t) for a, t in self.manifest(name).aliases.items()}

    def path(self, name: str, version: int) -> Path:
        """The path of the model file of ``name`` version ``version``."""
        return self.root / validate_name(name) / str(int(version)) / MODEL_FILE

    def resolve(
        self,
        name: str,
        version: int | str | None = None,
        alias: str | None = None,
        *,
        default_alias: str | None = "production",
        manifest: Manifest | None = None,
        sticky_key: str | None = None,
    ) -> int:
        """The version number that a request for ``name`` should use.

        ``version`` wins over ``alias``; ``"latest"`` means the newest version.
        With neither, ``default_alias`` is used when the model has it, else the
        newest version. An alias with several weighted targets (a canary split)
        picks one of them at random in proportion to the weights, or, given a
        ``sticky_key`` (e.g. a user id), by a stable hash of the model name and
        that key: the same key gets the same version in every process and
        across restarts, and many keys split in proportion to the weights.
        """
        m = manifest if manifest is not None else self.manifest(name)
        if version is not None:
            if isinstance(version, str) and version != LATEST:
                if not _is_number(version):
                    raise ModelNotFoundError(
                        f"invalid version {version!r} of model {name!r}: expected a number"
                    )
                version = int(version)
            if version == LATEST:
                alias = LATEST
            elif version in m.versions:
                return int(version)
            else:
                raise ModelNotFoundError(f"model {name!r} has no version {version}")
        if alias is None:
            alias = default_alias if default_alias in m.aliases else LATEST
        if alias == LATEST:
            if m.latest is None:
                raise ModelNotFoundError(f"model {name!r} has no published version")
            return m.latest
        targets = m.aliases.get(alias)
        if not targets:
            raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
        if sticky_key is not None:
            return self.choose_target(targets, sticky_key=f"{name}\0{sticky_key}")
        return self.choose_target(targets)

    def choose_target(
        self,
        targets: tuple[AliasTarget, ...] | list[AliasTarget],
        sticky_key: str | None = None,
    ) -> int:
        """Pick one version of an alias, in proportion to the targets' weights.

        With ``sticky_key`` the pick is a stable hash of the key, not a coin toss.
        """
        if len(targets) == 1:
            return targets[0].version
        total = sum(t.weight for t in targets)
        if sticky_key is not None:
            digest = hashlib.blake2b(sticky_key.encode("utf-8", "surrogatepass"), digest_size=8)
            fraction = int.from_bytes(digest.digest(), "big") / 2.0**64
        else:
            fraction = self._random.random()
        point = fraction * total
        for target in targets:
            point -= target.weight
            if point < 0:
                return target.version
        return targets[-1].version

    def get(self, name: str, version: int | str | None = None, alias: str | None = None) -> Any:
        """The loaded model for ``name`` at ``version`` or ``alias`` (see resolve)."""
        return self.load_version(name, self.resolve(name, version, alias))

    def load_version(self, name: str, version: int) -> Any:
        """Load (once per store object, then from the cache) a published version.

        The model's arrays are memory-mapped from its file, so every process
        that loads the same version shares one copy of the weights.
        """
        key = (name, int(version))
        model = self._loaded.get(key)
        if model is not None:
            return model
        with self._loaded_lock:
            model = self._loaded.get(key)
            if model is None:
                import mlserve

                path = self.path(name, version)
                if not path.exists():
                    raise ModelNotFoundError(f"model {name!r} has no version {version}")
                model = mlserve.load(path)
                self._loaded[key] = model
        return model

    def forget(self, name: str, version: int) -> None:
        """Drop a loaded version from this store object's cache."""
        with self._loaded_lock:
            self._loaded.pop((name, int(version)), None)

    def serving(
        self,
        name: str,
        manifest: Manifest | None = None,
        *,
        default_alias: str | None = "production",
    ) -> tuple[str, tuple[AliasTarget, ...]]:
        """What a request for ``name`` without a version or alias is answered by.

        Returns ``(alias, targets)``: ``default_alias`` and its targets when the
        model has that alias, else ``("latest", (newest version,))`` (no targets
        when nothing is published), as :meth:`resolve` chooses.
        """
        m = manifest if manifest is not None else self.manifest(name)
        if default_alias is not None and m.aliases.get(default_alias):
            return default_alias, m.aliases[default_alias]
        return LATEST, (AliasTarget(m.latest),) if m.latest is not None else ()

    def version_metadata(self, name: str, version: int, manifest: Manifest | None = None) -> dict:
        """The ``.mls`` metadata of one version, from the manifest (no model is loaded)."""
        m = manifest if manifest is not None else self.manifest(name)
        info = m.versions.get(int(version))
        if info is None:
            raise ModelNotFoundError(f"model {name!r} has no version {version}")
        if "metadata" in info:
            return dict(info["metadata"])
        import mlserve  # a manifest written without the copy: read the file's header

        return _jsonable(mlserve.load(self.path(name, version), verify=False).metadata)

    def describe(
        self,
        name: str,
        manifest: Manifest | None = None,
        *,
        default_alias: str | None = "production",
    ) -> dict[str, Any]:
        """A JSON-ready summary of one model: versions, aliases, inputs, outputs.

        The inputs and outputs are those of the version a request without a
        version gets (``default_alias``, else the newest; of a canary split, its
        heaviest version), which is ``"version"``; ``"serving"`` lists the alias
        and its versions with their share of the traffic in percent, and
        ``"latest_version"`` the newest published version.
        """
        m = manifest if manifest is not None else self.manifest(name)
        alias, targets = self.serving(name, m, default_alias=default_alias)
        version = primary_version(targets)
        metadata = self.version_metadata(name, version, m) if version is not None else {}
        total = sum(t.weight for t in targets)
        return {
            "name": name,
            "versions": sorted(m.versions),
            "latest_version": m.latest,
            "serving": {
                "alias": alias,
                "versions": [
                    {"version": t.version, "weight": 100 * t.weight / total} for t in targets
                ],
            },
            "version": version,
            "aliases": {
                a: [{"version": t.version, "weight": t.weight} for t in targets]
                for a, targets in sorted(m.aliases.items())
            },
            "shadows": {a: {"version": v} for a, v in sorted(m.shadows.items())},
            "task": metadata.get("task"),
            "estimator": metadata.get("estimator"),
            "n_features": metadata.get("n_features"),
            "input_shape": [-1, metadata.get("n_features")],
            "output_shape": [-1, *metadata.get("output_shape", [])],
            "classes": metadata.get("classes"),
            "feature_names": metadata.get("feature_names"),
            "dtype": metadata.get("dtype"),
        }

    def _check_alias_move(
        self,
        manifest: Manifest,
        alias: str,
        targets: tuple[AliasTarget, ...],
        metadata: Mapping[int, Mapping[str, Any]],
    ) -> list[str]:
        """What differs between ``targets`` and what ``alias`` serves now (and among targets).

        ``metadata`` holds the metadata of versions the manifest does not list
        yet (a version being published).
        """

        def meta(version: int) -> Mapping[str, Any]:
            if version in metadata:
                return metadata[version]
            return self.version_metadata(manifest.name, version, manifest)

        served = manifest.aliases.get(alias, ())
        problems: list[str] = []
        for new in targets:
            for old in served:
                if old.version != new.version:
                    problems += compatibility_problems(
                        meta(old.version),
                        meta(new.version),
                        candidate_label=f"version {new.version}",
                        served_label=alias,
                        served_version=old.version,
                    )
        if not served and len(targets) > 1:
            # a new alias split across versions: they must agree with each other (with
            # versions the alias serves, the loop above compared every target already)
            reference = targets[0]
            for new in targets:
                if new.version != reference.version:
                    problems += compatibility_problems(
                        meta(reference.version),
                        meta(new.version),
                        candidate_label=f"version {new.version}",
                        served_label=f"the same split of {alias}",
                        served_version=reference.version,
                    )
        return list(dict.fromkeys(problems))  # each sentence once, in order

    # ---------------------------------------------------------------- writing

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        model_dir = self.root / validate_name(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        with open(model_dir / LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield model_dir
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_or_empty(self, name: str) -> Manifest:
        try:
            return self.manifest(name)
        except ModelNotFoundError:
            return Manifest.empty(name)

    def _write_manifest(self, manifest: Manifest) -> None:
        data = json.dumps(manifest.to_json(), indent=1, sort_keys=True).encode()
        _write_atomic(self.root / manifest.name / MANIFEST_FILE, data)

    def publish(
        self,
        name: str,
        model: Any,
        alias: str | None = None,
        *,
        description: str | None = None,
        force: bool = False,
    ) -> int:
        """Add a model as the next version of ``name``; return its version number.

        Parameters
        ----------
        name : str
            The model's name (letters, digits, '.', '_', '-').
        model : path or fitted estimator
            A ``.mls`` file (validated before it is added) or an in-memory
            mlserve estimator (saved into the store).
        alias : str, optional
            Point this alias at the new version once it is published. Refused
            (:class:`IncompatibleModelError`, and no version is created) when the
            model differs from what the alias serves: task, features (number,
            names, order), classes, input dtype or shape, outputs.
        description : str, optional
            Free text kept in the manifest.
        force : bool, default False
            Point ``alias`` at the new version even if it differs.
        """
        import mlserve

        validate_name(name)
        if alias is not None:
            validate_alias(alias)
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            staged = staging / MODEL_FILE
            source: Path | None = None
            if isinstance(model, (str, os.PathLike)):
                source = Path(model)
                if not source.is_file():
                    raise StoreError(
                        f"cannot publish {str(source)!r}: no such file"
                        " (expected a .mls file or a fitted mlserve model)"
                    )
                shutil.copyfile(source, staged)
            else:
                mlserve.save(model, staged)
            _fsync_file(staged)
            _fsync_dir(staging)
            try:
                loaded = mlserve.load(staged, verify=True)
            except mlserve.ModelFormatError as exc:
                if source is None:
                    raise
                # name the user's file, not the staging copy it was read from
                raise mlserve.ModelFormatError(
                    f"cannot publish {str(source)!r}: "
                    + str(exc).replace(f"cannot load {str(staged)!r}: ", "")
                ) from None
            info: dict[str, Any] = {
                "published_at": _now(),
                "sha256": _sha256(staged),
                "size": staged.stat().st_size,
                "metadata": _jsonable(loaded.metadata),
            }
            del loaded
            if description is not None:
                info["description"] = str(description)
            with self._locked(name):
                current = self._read_or_empty(name)
                version = max([current.next_version, *self._version_dirs(model_dir)])
                # Numbered folders the manifest does not list are left by a publish
                # or delete killed half-way; under the lock no writer is mid-way.
                orphans = [
                    model_dir / e.name
                    for e in os.scandir(model_dir)
                    if _is_number(e.name) and int(e.name) not in current.versions
                ]
                if alias is not None and not force:
                    problems = self._check_alias_move(
                        current, alias, (AliasTarget(version),), {version: info["metadata"]}
                    )
                    if problems:
                        raise IncompatibleModelError(
                            f"refused to publish model {name!r} as {alias!r}: "
                            + "; ".join(problems)
                            + f". Nothing was published and {alias!r} still points to"
                            f" {_format_versions(current.aliases[alias])}"
                            " (force=True or --force publishes it anyway)",
                            problems,
                        )
                target = model_dir / str(version)
                os.rename(staging, target)
                _fsync_dir(model_dir)
                versions = dict(current.versions)
                versions[version] = info
                updated = Manifest(
                    name=name,
                    versions=versions,
                    aliases=current.aliases,
                    alias_history=current.alias_history,
                    next_version=version + 1,
                    shadows=current.shadows,
                )
                if alias is not None:
                    updated = _with_alias(updated, alias, (AliasTarget(version),))
                self._write_manifest(updated)
                for orphan in orphans:
                    shutil.rmtree(orphan, ignore_errors=True)
                self._remove_stale_staging(model_dir)
            return version
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _remove_stale_staging(model_dir: Path) -> None:
        """Remove staging folders of publishes that died more than a day ago."""
        cutoff = time.time() - STALE_STAGING_SECONDS
        for entry in os.scandir(model_dir):
            if entry.name.startswith(STAGING_PREFIX):
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < cutoff:
                        shutil.rmtree(entry.path, ignore_errors=True)

    @staticmethod
    def _version_dirs(model_dir: Path) -> list[int]:
        """One more than each numbered directory, so orphans' numbers are skipped."""
        return [int(e.name) + 1 for e in os.scandir(model_dir) if _is_number(e.name)]

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | Mapping[int, float],
        *,
        force: bool = False,
    ) -> list[AliasTarget]:
        """Point ``alias`` at a version, or at several with weights (a canary split).

        ``store.set_alias("churn", "production", {3: 90, 4: 10})`` sends 90% of
        the traffic for ``production`` to version 3 and 10% to version 4.
        The previous targets are remembered for :meth:`rollback`.

        Refused with :class:`IncompatibleModelError` (the alias does not move)
        when a new version differs from one the alias serves, or the versions
        of a split differ from each other (see :func:`compatibility_problems`);
        ``force=True`` moves it anyway.
        """
        validate_alias(alias)
        targets = _parse_targets(version)
        with self._locked(name):
            current = self.manifest(name)
            for t in targets:
                if t.version not in current.versions:
                    raise ModelNotFoundError(f"model {name!r} has no version {t.version}")
            if current.aliases.get(alias) == targets:
                return list(targets)
            if not force:
                problems = self._check_alias_move(current, alias, targets, {})
                if problems:
                    still = current.aliases.get(alias)
                    unchanged = (
                        f"{alias!r} still points to {_format_versions(still)}"
                        if still
                        else f"{alias!r} was not created"
                    )
                    raise IncompatibleModelError(
                        f"refused to point {alias!r} of model {name!r} at"
                        f" {_format_versions(targets)}: "
                        + "; ".join(problems)
                        + f". {unchanged} (force=True or --force moves it anyway)",
                        problems,
                    )
            self._write_manifest(_with_alias(current, alias, targets))
        return list(targets)

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` (and its history) from model ``name``."""
        with self._locked(name):
            current = self.manifest(name)
            if alias not in current.aliases:
                raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
            aliases = dict(current.aliases)
            del aliases[alias]
            history = dict(current.alias_history)
            history.pop(alias, None)
            shadows = {a: v for a, v in current.shadows.items() if a != alias}
            self._write_manifest(
                Manifest(name, current.versions, aliases, history, current.next_version, shadows)
            )

    def rollback(self, name: str, alias: str) -> list[AliasTarget]:
        """Move ``alias`` back to the versions it pointed to before its last move.

        Never refused for compatibility: it restores what the alias served
        before, which is the way back from a move made with ``force=True``.
        """
        with self._locked(name):
            current = self.manifest(name)
            if alias not in current.aliases:
                raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
            history = list(current.alias_history.get(alias, ()))
            if not history:
                raise StoreError(
                    f"alias {alias!r} of model {name!r} has no previous version to roll back to"
                )
            previous = history.pop()
            aliases = dict(current.aliases)
            aliases[alias] = previous
            histories = dict(current.alias_history)
            histories[alias] = tuple(history)
            self._write_manifest(
                Manifest(
                    name, current.versions, aliases, histories, current.next_version,
                    current.shadows,
                )
            )
        return list(previous)

    def shadows(self, name: str) -> dict[str, int]:
        """The shadows of model ``name``: alias -> the version that gets a copy of its traffic."""
        return dict(self.manifest(name).shadows)

    def set_shadow(self, name: str, alias: str, version: int) -> None:
        """Mirror the requests that ``alias`` of ``name`` answers to ``version`` (shadow traffic).

        Servers run ``version`` on a copy of each such request off the request path
        and export how often it agrees; clients only ever get the alias's answer.
        Refused (nothing changes) when the alias or version does not exist or
        the version cannot take the alias's inputs (different features, dtype).
        """
        validate_alias(alias)
        version = _as_version(version)
        with self._locked(name):
            current = self.manifest(name)
            if alias not in current.aliases:
                raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
            if version not in current.versions:
                raise ModelNotFoundError(f"model {name!r} has no version {version}")
            meta = current.versions[version].get("metadata", {})
            for target in current.aliases[alias]:
                served = current.versions[target.version].get("metadata", {})
                for key in ("n_features", "dtype", "task"):
                    if served.get(key) != meta.get(key):
                        raise IncompatibleModelError(
                            f"refused to shadow {alias!r} of model {name!r} with version"
                            f" {version}: its {key} is {meta.get(key)!r}, version"
                            f" {target.version} has {served.get(key)!r}",
                            [f"{key} differs"],
                        )
            if current.shadows.get(alias) == version:
                return
            shadows = {**current.shadows, alias: version}
            self._write_manifest(
                Manifest(
                    name, current.versions, current.aliases, current.alias_history,
                    current.next_version, shadows,
                )
            )

    def remove_shadow(self, name: str, alias: str) -> None:
        """End the shadow of ``alias`` of model ``name``."""
        with self._locked(name):
            current = self.manifest(name)
            if alias not in current.shadows:
                raise ModelNotFoundError(f"alias {alias!r} of model {name!r} has no shadow")
            shadows = {a: v for a, v in current.shadows.items() if a != alias}
            self._write_manifest(
                Manifest(
                    name, current.versions, current.aliases, current.alias_history,
                    current.next_version, shadows,
                )
            )

    def delete(self, name: str, version: int) -> None:
        """Delete one version; refused while an alias points to it."""
        version = int(version)
        with self._locked(name) as model_dir:
            current = self.manifest(name)
            if version not in current.versions:
                raise ModelNotFoundError(f"model {name!r} has no version {version}")
            in_use = current.aliases_of(version)
            if in_use:
                raise VersionInUseError(
                    f"cannot delete version {version} of model {name!r}: "
                    f"alias {', '.join(repr(a) for a in in_use)} points to it"
                )
            shadowing = sorted(a for a, v in current.shadows.items() if v == version)
            if shadowing:
                raise VersionInUseError(
                    f"cannot delete version {version} of model {name!r}: it shadows alias "
                    f"{', '.join(repr(a) for a in shadowing)} (end it with"
                    f" mlserve shadow {name} {shadowing[0]} --off)"
                )
            versions = {v: i for v, i in current.versions.items() if v != version}
            history = {
                a: tuple(h for h in hist if all(t.version != version for t in h))
                for a, hist in current.alias_history.items()
            }
            self._write_manifest(
                Manifest(
                    name, versions, current.aliases, history, current.next_version,
                    current.shadows,
                )
            )
            # The manifest no longer lists it; removing the files can be partial.
            shutil.rmtree(model_dir / str(version), ignore_errors=True)
        self.forget(name, version)


def primary_version(targets: tuple[AliasTarget, ...] | list[AliasTarget]) -> int | None:
    """The version that takes most of an alias's traffic (of equal weights, the lowest)."""
    if not targets:
        return None
    return min(targets, key=lambda t: (-t.weight, t.version)).version


def _format_versions(targets: tuple[AliasTarget, ...] | list[AliasTarget] | None) -> str:
    if not targets:
        return "nothing"
    if len(targets) == 1:
        return f"version {targets[0].version}"
    total = sum(t.weight for t in targets)
    return "versions " + ", ".join(f"{t.version} ({100 * t.weight / total:g}%)" for t in targets)


def _parse_targets(version: int | Mapping[int, float]) -> tuple[AliasTarget, ...]:
    if isinstance(version, Mapping):
        if not version:
            raise StoreError(
                "an alias needs at least one version: expected a version number or a mapping"
                " {version: weight}, got an empty mapping"
            )
        targets = []
        for v, weight in version.items():
            try:
                w = float(weight)
            except (TypeError, ValueError):
                w = float("nan")  # refused just below, with the value in the message
            if isinstance(weight, bool) or not w > 0 or w == float("inf"):
                raise StoreError(f"weight of version {v} must be a positive number, got {weight!r}")
            targets.append(AliasTarget(_as_version(v), w))
        return tuple(sorted(targets, key=lambda t: t.version))
    return (AliasTarget(_as_version(version)),)


def _as_version(value: Any) -> int:
    if isinstance(value, bool):
        raise StoreError(f"invalid version {value!r}: expected a positive integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise StoreError(f"invalid version {value!r}: expected a positive integer") from None
    if number < 1 or (isinstance(value, float) and value != number):
        raise StoreError(f"invalid version {value!r}: expected a positive integer")
    return number


def _with_alias(m: Manifest, alias: str, targets: tuple[AliasTarget, ...]) -> Manifest:
    aliases = dict(m.aliases)
    history = dict(m.alias_history)
    previous = aliases.get(alias)
    if previous is not None and previous != targets:
        history[alias] = (*history.get(alias, ()), previous)[-ALIAS_HISTORY_LIMIT:]
    aliases[alias] = targets
    return Manifest(m.name, m.versions, aliases, history, m.next_version, m.shadows)
