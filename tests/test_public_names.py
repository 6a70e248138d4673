"""Every telecorder name that README.md and docs/*.md show resolves for real.

The docs show names two ways: imports in their code blocks (``from telecorder.loaders import
TorchDataset``, ``import telecorder.sim``) and dotted names in the text (``telecorder.collect.key_bindings``,
``telecorder.converters.FORMATS``). Each one is imported (importlib) and looked up (getattr), so a
name that moves fails here, by name, until the docs follow it.

TensorFlow must not load in the non-``tf`` pytest process (it breaks MuJoCo's EGL rendering): an
import finder refuses it while names resolve, and a name that needs it is resolved again in a
subprocess of its own.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+(telecorder(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]+)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#;]+)", re.M)
# A dotted name, not part of a path or a longer word (src/telecorder/..., my_telecorder.x).
_DOTTED = re.compile(r"(?<![\w./-])telecorder(?:\.[A-Za-z_]\w*)+")
_TENSORFLOW = ("tensorflow", "tensorflow_datasets")
# missing_extra() names pip packages; the module to look for where it differs.
_EXTRA_MODULES = {"apache-beam": "apache_beam"}


def names_shown(text: str) -> list[str]:
    """The telecorder names a Markdown text shows: its code blocks' imports, and every dotted name."""
    names: list[str] = []
    for block in _FENCE.findall(text):
        for module, imported in _FROM_IMPORT.findall(block):
            for item in imported.strip("()").replace("\n", " ").split(","):
                item = item.split("#")[0].strip()
                if item and item != "*":
                    names.append(f"{module}.{item.split()[0]}")
        for imported in _IMPORT.findall(block):
            for item in imported.split(","):
                words = item.split()
                if words and words[0].split(".")[0] == "telecorder":
                    names.append(words[0])
    names += _DOTTED.findall(text)
    return list(dict.fromkeys(names))


def docs_names(paths: Iterable[Path]) -> dict[str, list[str]]:
    """Each name the files show, with the files that show it."""
    shown: dict[str, list[str]] = {}
    for path in paths:
        for name in names_shown(path.read_text(encoding="utf-8")):
            shown.setdefault(name, []).append(path.name)
    return shown


def resolve(name: str) -> object:
    """The object a dotted name stands for: the longest prefix that is a module, then attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj: object = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # This prefix is not a module (the rest are attributes); a shorter one may be. Any other
            # missing module (a third-party one, or one this module imports) is a real failure.
            if e.name is not None and (e.name == module_name or module_name.startswith(e.name + ".")):
                continue
            raise
        with warnings.catch_warnings():
            # A deprecated alias the docs mention (telecorder.datasets.TorchDataset) still resolves.
            warnings.simplefilter("ignore", DeprecationWarning)
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"no module named {parts[0]!r}", name=parts[0])


class _RefuseTensorFlow(importlib.abc.MetaPathFinder):
    """Refuses TensorFlow imports and remembers them, so resolving a name cannot load it here."""

    def __init__(self) -> None:
        self.attempted: list[str] = []

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.split(".")[0] in _TENSORFLOW:
            self.attempted.append(fullname)
            raise ImportError(f"{fullname}: TensorFlow is not imported in this process (test_public_names)")
        return None


@contextmanager
def _no_tensorflow() -> Iterator[_RefuseTensorFlow]:
    finder = _RefuseTensorFlow()
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)


def _missing_module(exc: BaseException) -> str | None:
    """The optional third-party module whose absence made ``exc``, if that is what happened."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name and seen.name.split(".")[0] != "telecorder":
            return seen.name.split(".")[0]
        m = re.match(r"(\S+).* is not installed; install it with: pip install 'telecorder\[", str(seen))
        if m:
            return _EXTRA_MODULES.get(m.group(1), m.group(1))
        seen = seen.__cause__ or seen.__context__
    return None


def _resolve_in_subprocess(name: str) -> str | None:
    """Resolve a name that imports TensorFlow in a process of its own; None when it resolves."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from test_public_names import resolve; resolve(sys.argv[2])")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), name],
                          capture_output=True, text=True, timeout=600)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def _try_resolve(name: str) -> tuple[Exception | None, bool]:
    """Resolve a name with TensorFlow refused: the error (None: resolved), and whether it asked for TF."""
    with _no_tensorflow() as finder:
        try:
            resolve(name)
            error = None
        except Exception as e:  # any failure to import or look up is the answer
            error = e
    return error, bool(finder.attempted)


def why_unresolved(name: str) -> str | None:
    """Why a name does not resolve (None when it does, or when only a missing optional extra stops it)."""
    error, wants_tensorflow = _try_resolve(name)
    if wants_tensorflow:
        return _resolve_in_subprocess(name)
    if error is None:
        return None
    missing = _missing_module(error)
    if missing and importlib.util.find_spec(missing) is None:
        return None
    return f"{type(error).__name__}: {error}"


def unresolved_names(paths: Iterable[Path]) -> dict[str, str]:
    """name -> why, for every name the files show that does not resolve."""
    failures = {}
    for name in docs_names(paths):
        why = why_unresolved(name)
        if why is not None:
            failures[name] = why
    return failures


SHOWN = docs_names(DOC_FILES)


def test_the_docs_show_names() -> None:
    assert "telecorder.loaders.TorchDataset" in SHOWN, "README/docs no longer show the loader import"
    assert len(SHOWN) > 20


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_name_resolves(name: str) -> None:
    where = f"{name} (shown in {', '.join(SHOWN[name])}) does not resolve"
    error, wants_tensorflow = _try_resolve(name)
    if wants_tensorflow:
        # Never in this process, which runs MuJoCo; a process of its own may load TensorFlow.
        why = _resolve_in_subprocess(name)
        assert why is None, f"{where}: {why}"
        return
    if error is not None:
        missing = _missing_module(error)
        if missing:
            pytest.importorskip(missing, reason=f"{name} needs {missing} (an optional extra)")
        pytest.fail(f"{where}: {type(error).__name__}: {error}")


def test_names_shown_reads_imports_and_dotted_names() -> None:
    text = (
        "Use `telecorder.sim.kinematics` (see src/telecorder/sim/assets, my_telecorder.x).\n\n"
        "```python\n"
        "from telecorder.actions import (Normalizer,\n    UniformBins as Bins)  # comment\n"
        "import json, telecorder.atomic as atomic; x = 1\n"
        "from octo.data import make_single_dataset\n"
        "```\n"
    )
    assert names_shown(text) == [
        "telecorder.actions.Normalizer", "telecorder.actions.UniformBins", "telecorder.atomic",
        "telecorder.sim.kinematics", "telecorder.actions",
    ]


def test_a_bogus_name_fails(tmp_path: Path) -> None:
    # A copy of the README with names that do not exist: exactly those must be reported.
    doc = tmp_path / "README.md"
    doc.write_text(
        (ROOT / "README.md").read_text(encoding="utf-8")
        + "\n```python\nfrom telecorder.datasets import Dataset, NoSuchName\nimport telecorder.no_such_module\n```\n"
        + "\nSee `telecorder.loaders.NoSuchLoader`.\n",
        encoding="utf-8",
    )
    failures = unresolved_names([doc])
    assert set(failures) == {"telecorder.datasets.NoSuchName", "telecorder.no_such_module",
                             "telecorder.loaders.NoSuchLoader"}, failures
    assert "NoSuchName" in failures["telecorder.datasets.NoSuchName"]


def test_a_name_that_imports_tensorflow_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The guard sees a name whose module imports TensorFlow, and TensorFlow stays out of this process.
    # TensorFlow itself must not be loaded yet (an import of a loaded module asks no finder);
    # tensorflow_datasets may be: test modules of the tf set import it while pytest collects them.
    if "tensorflow" in sys.modules:
        pytest.skip("TensorFlow is already imported in this process")
    (tmp_path / "uses_tf_for_test_public_names.py").write_text("import tensorflow as tf\nVALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    error, wants_tensorflow = _try_resolve("uses_tf_for_test_public_names.VALUE")
    assert wants_tensorflow and isinstance(error, ImportError)
    assert "tensorflow" not in sys.modules


def test_a_subprocess_resolves_and_reports() -> None:
    # Where TensorFlow names are resolved: the same resolve(), its failure carried back by name.
    assert _resolve_in_subprocess("telecorder.errors.TelecorderError") is None
    assert "NoSuchError" in (_resolve_in_subprocess("telecorder.errors.NoSuchError") or "")
