"""``dvc.yaml`` declares what every stage reads, and ``dvc status`` sees a change to any of it.

Two halves:

* What a stage reads is recorded, not listed by hand: ``tests/test_notebooks.py`` runs every notebook of the smoke
  profile with :data:`hierars.project.params.TRACK_ENV` set (``load_params`` then records each params key read) and a
  last cell that dumps those keys, the package data files opened and the ``hierars`` modules in ``sys.modules``;
  it then calls :func:`check_stage_reads`, which asserts that the stage's ``params`` cover every key read and its
  ``deps`` every module file and package data file (and that no declared ``hierars/`` dep goes unused).
  Keys that a section's pydantic model accepts but the smoke profile does not set are covered by
  :func:`test_key_level_sections_declare_every_field`: where a stage declares a section key by key (``train``, so
  that one run's entry does not re-run the others), every field of the model is declared, hence in params.yaml.
* ``dvc status`` sees each declaration: in a temporary copy of the repository with a fresh ``dvc.lock``
  (``dvc commit -f``), every params value changed at once makes each stage report exactly its declared keys, every
  package file and notebook edited at once exactly its declared code deps (so a key or file changed alone is seen
  too), and one run's entry stales that run only (:func:`test_dvc_status_is_precise`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml

from hierars.project import PROJ_ROOT

DVC_YAML = PROJ_ROOT / "dvc.yaml"
PARAMS_YAML = PROJ_ROOT / "params.yaml"
DVC = Path(sys.executable).parent / "dvc"


def _stages() -> dict[str, dict]:
    return yaml.safe_load(DVC_YAML.read_text())["stages"]


def _params_yaml() -> dict:
    return yaml.safe_load(PARAMS_YAML.read_text())


def section_models() -> dict[str, Any]:
    """``params.yaml`` section -> the pydantic model that validates it (the same map docs/settings.md is built from)."""
    sys.path.insert(0, str(PROJ_ROOT / "scripts"))
    try:
        import settings_doc
    finally:
        sys.path.remove(str(PROJ_ROOT / "scripts"))
    return settings_doc.section_models()


def _expand(values: Iterable[Any], item: str | None) -> list[str]:
    """A stage's ``params``/``deps`` entries as plain strings, ``${key}``/``${item}`` replaced by ``item``."""
    out = []
    for v in values:
        names = list(v) if isinstance(v, dict) else [v]  # `- params.yaml: [a, b]` or `- a`
        for name in names:
            if isinstance(v, dict):
                out += [str(k) for k in (v[name] or [])]
            else:
                out.append(str(name))
    if item is not None:
        out = [o.replace("${key}", item).replace("${item}", item) for o in out]
    return out


def stage_for_notebook(stem: str) -> str:
    """The dvc.yaml stage whose deps list ``notebooks/<stem>.ipynb``."""
    found = [name for name, st in _stages().items()
             if f"notebooks/{stem}.ipynb" in _expand((st.get("do") or st).get("deps", []), None)]
    assert len(found) == 1, f"notebooks/{stem}.ipynb: expected one dvc.yaml stage depending on it, got {found}"
    return found[0]


def declared(stage: str, item: str | None = None) -> tuple[list[str], list[str]]:
    """``(params, deps)`` of a dvc.yaml stage (of a ``foreach`` stage: for ``item``)."""
    st = _stages()[stage]
    body = st.get("do") or st
    return _expand(body.get("params", []), item), _expand(body.get("deps", []), item)


def _covered(key: str, decl: Iterable[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in decl)


def _path_covered(rel: str, deps: Iterable[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def record_cell(record: Path) -> nbformat.NotebookNode:
    """A last notebook cell that dumps what the kernel read: params keys, package data files, hierars modules."""
    return nbformat.v4.new_code_cell(
        "import json as _json, sys as _sys\n"
        "_p = _sys.modules.get('hierars.project.params')\n"
        "_mods = {m: getattr(v, '__file__', None) for m, v in list(_sys.modules.items())\n"
        "         if m == 'hierars' or m.startswith('hierars.')}\n"
        f"with open({str(record)!r}, 'w') as _fh:\n"
        "    _json.dump({'params': _p.params_read() if _p else [], 'files': _p.files_read() if _p else [],\n"
        "               'modules': _mods}, _fh)\n")


def with_record_cell(nb: Path, out_dir: Path, record: Path) -> Path:
    """A copy of notebook ``nb`` in ``out_dir`` ending with :func:`record_cell`."""
    book = nbformat.read(nb, as_version=4)
    book.cells.append(record_cell(record))
    out_dir.mkdir(parents=True, exist_ok=True)
    copy = out_dir / f"{nb.stem}.recording.ipynb"
    nbformat.write(book, copy)
    return copy


def check_stage_reads(stem: str, item: str | None, record: dict) -> None:
    """Assert that the stage running notebook ``stem`` (for ``item``) declares what ``record`` says it read."""
    stage = stage_for_notebook(stem)
    params, deps = declared(stage, item)
    label = f"dvc.yaml stage {stage}" + (f" (item {item})" if item else "")
    missing = sorted(k for k in record["params"] if not _covered(k, params))
    assert not missing, f"{label} reads params {missing} but its `params` do not declare them"
    files = set()
    for path in record["modules"].values():
        if path is None:  # a namespace package
            continue
        rel = Path(path).resolve().relative_to(PROJ_ROOT.resolve()).as_posix()
        files.add(rel)
    files |= {Path(f).resolve().relative_to(PROJ_ROOT.resolve()).as_posix() for f in record["files"]}
    undeclared = sorted(f for f in files if not _path_covered(f, deps))
    assert not undeclared, f"{label} runs/reads {undeclared} but its `deps` do not declare them"
    unused = [d for d in deps if d.startswith("hierars") and not any(_path_covered(f, [d]) for f in files)]
    assert not unused, f"{label} declares deps {unused} that the notebook never imported or opened"


# --- static checks (fast) ---------------------------------------------------------------------------------------

def _items(stage: str) -> list[str | None]:
    st = _stages()[stage]
    if "foreach" not in st:
        return [None]
    ref = st["foreach"]
    assert isinstance(ref, str) and ref.startswith("${") and ref.endswith("}"), ref
    value: Any = _params_yaml()
    for part in ref[2:-1].split("."):
        value = value[part]
    return list(value)


def _lookup(params: dict, key: str) -> bool:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_declared_params_and_deps_exist() -> None:
    """DVC refuses to run a stage whose declared params key is missing from params.yaml, or whose dep is missing."""
    params = _params_yaml()
    for stage in _stages():
        for item in _items(stage):
            keys, deps = declared(stage, item)
            missing = [k for k in keys if not _lookup(params, k)]
            assert not missing, f"dvc.yaml stage {stage} ({item}) declares params missing from params.yaml: {missing}"
            for d in deps:
                if d.startswith(("hierars", "notebooks")):
                    assert (PROJ_ROOT / d).exists(), f"dvc.yaml stage {stage}: dep {d} does not exist"


def test_key_level_sections_declare_every_field() -> None:
    """A section declared key by key must list every field its model accepts (DVC cannot see an undeclared key)."""
    models = section_models()
    for stage in _stages():
        for item in _items(stage):
            keys, _ = declared(stage, item)
            for section, model in models.items():
                if section in keys or not any(k.startswith(section + ".") for k in keys):
                    continue  # declared whole, or not read
                fields = list(model.model_fields)
                absent = [f for f in fields if not any(k == f"{section}.{f}" or k.startswith(f"{section}.{f}.")
                                                       for k in keys)]
                assert not absent, (f"dvc.yaml stage {stage} declares `{section}` key by key but not "
                                    f"{[f'{section}.{f}' for f in absent]} (add them to params.yaml and dvc.yaml)")


def test_fidelity_depends_on_each_shown_study() -> None:
    """The fidelity stage depends on the folder of each study it shows (``fidelity.profiles``), and on no other:
    a study missing from ``deps`` could change unseen by ``dvc status``; one not shown would stale the stage when
    it is committed (scripts/learning_curves.py adds studies to ``fidelity.folder`` before they are shown)."""
    cfg = _params_yaml()["fidelity"]
    folder = cfg["folder"].rstrip("/")
    _, deps = declared("fidelity")
    studies = {d for d in deps if _path_covered(d, [folder])}
    want = {f"{folder}/{p}" for p in cfg["profiles"]}
    assert studies == want, (f"dvc.yaml stage fidelity: study deps {sorted(studies)}, fidelity.profiles "
                             f"{sorted(want)} (missing {sorted(want - studies)}, extra {sorted(studies - want)})")
    ladder_studies = {p for ladder in cfg["ladders"] for p in ladder if p != "pipeline"} | {cfg["budget_profile"]}
    assert ladder_studies <= set(cfg["profiles"]), f"ladders/budget_profile name studies outside fidelity.profiles: " \
        f"{sorted(ladder_studies - set(cfg['profiles']))}"


def test_fidelity_defaults_equal_params_yaml() -> None:
    """``FidelitySection``'s defaults are the committed study list (notebook 06 run outside the pipeline, e.g. from
    a wheel, shows the same studies as the stage), so they move with ``params.yaml``'s ``fidelity`` section."""
    from hierars.project.fidelity import FidelitySection

    assert FidelitySection().model_dump() == FidelitySection(**_params_yaml()["fidelity"]).model_dump(), (
        "FidelitySection's defaults differ from params.yaml's fidelity section: change both together")


def test_dvc_lock_covers_every_stage() -> None:
    """The committed dvc.lock has an entry for every (expanded) stage, so `dvc status` compares against it."""
    lock = yaml.safe_load((PROJ_ROOT / "dvc.lock").read_text())["stages"]
    for stage in _stages():
        for item in _items(stage):
            name = stage if item is None else f"{stage}@{item}"
            assert name in lock, f"dvc.lock has no entry for {name} (run `dvc repro {name}` or `dvc commit`)"


# --- dvc status in a copy of the repository ---------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if res.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def _status(repo: Path) -> set[str]:
    out = _run([str(DVC), "status", "--json"], repo)
    return set(json.loads(out or "{}"))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tracked files of the checkout (working-tree versions) in a fresh git repository, with a fresh dvc.lock.

    Stage outputs are not copied: every cached output is stubbed (an empty folder or file) and ``dvc commit -f``
    records the current params, deps and stubs, so ``dvc status`` starts clean whatever the checkout's lock says.
    """
    if not DVC.exists():
        pytest.skip(f"dvc not found next to {sys.executable}")
    repo = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJ_ROOT, capture_output=True, check=True
                             ).stdout.decode().split("\0")
    for rel in filter(None, tracked):
        src = PROJ_ROOT / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    for p in (PROJ_ROOT / "hierars").rglob("*"):  # untracked package files (work in progress): DVC hashes them too
        rel = p.relative_to(PROJ_ROOT)
        if p.is_file() and "__pycache__" not in rel.parts and not (repo / rel).exists():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, repo / rel)
    for name, st in _stages().items():
        for item in _items(name):
            body = st.get("do") or st
            for kind in ("outs", "metrics", "plots"):
                for entry in body.get(kind, []):
                    out = str(next(iter(entry)) if isinstance(entry, dict) else entry)
                    out = out.replace("${key}", str(item)).replace("${item}", str(item))
                    target = repo / out
                    if target.exists():
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if Path(out).suffix:
                        target.write_text("{}\n" if out.endswith(".json") else "stub\n")
                    else:
                        target.mkdir()
                        (target / "stub").write_text("stub\n")
    _run(["git", "init", "-q"], repo)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], repo)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], repo)
    _run([str(DVC), "commit", "-f", "-q"], repo)
    assert _status(repo) == set(), _run([str(DVC), "status"], repo)
    return repo


def _expanded_stages() -> list[tuple[str, str | None]]:
    return [(s, i) for s in _stages() for i in _items(s)]


def _name(stage: str, item: str | None) -> str:
    return stage if item is None else f"{stage}@{item}"


def _changed(repo: Path) -> dict[str, dict[str, Any]]:
    """``dvc status --json`` as ``{stage: {changed dep path or params.yaml: ...}}``."""
    out = {}
    for stage, entries in json.loads(_run([str(DVC), "status", "--json"], repo) or "{}").items():
        deps: dict[str, Any] = {}
        for entry in entries:
            if isinstance(entry, dict):
                deps.update(entry.get("changed deps", {}))
        out[stage] = deps
    return out


def _mutate(value: Any) -> Any:
    """A different value of the same kind (what DVC compares is the value, not its validity)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    return 1  # None


def _mutate_all(node: dict, keep: set[str], prefix: str = "") -> None:
    for k, v in node.items():
        key = f"{prefix}{k}"
        if key in keep:
            continue
        if isinstance(v, dict):
            _mutate_all(v, keep, key + ".")
        else:
            node[k] = _mutate(v)


@pytest.mark.slow  # ~25 s to build the copy, ~5 s per `dvc status` (2 busy cores)
def test_dvc_status_reports_every_declared_params_key(repo_copy: Path) -> None:
    """Every params.yaml value changed at once: each stage reports exactly the keys it declares as modified.

    (DVC compares each declared key on its own, so a stage reports a key changed alone as well; which keys a stage
    reads is checked against its declaration by :func:`check_stage_reads`.) Each stage's foreach list is kept.
    """
    path = repo_copy / "params.yaml"
    original = path.read_text()
    data = yaml.safe_load(original)
    _mutate_all(data, keep={"transfer.run"})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        changed = _changed(repo_copy)
    finally:
        path.write_text(original)
    for stage, item in _expanded_stages():
        name = _name(stage, item)
        want = set(declared(stage, item)[0])
        got = set(changed.get(name, {}).get("params.yaml", {}))
        assert got == want, f"{name}: dvc status reports params {sorted(got)}, dvc.yaml declares {sorted(want)}"


@pytest.mark.slow  # ~25 s to build the copy, ~5 s per `dvc status` (2 busy cores)
def test_dvc_status_reports_every_declared_code_dep(repo_copy: Path) -> None:
    """Every package file and notebook edited at once: each stage reports exactly its declared code deps."""
    files = [p for p in (repo_copy / "hierars").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files += list((repo_copy / "notebooks").glob("*.ipynb"))
    saved = {p: p.read_bytes() for p in files}
    try:
        for p in files:
            p.write_bytes(saved[p] + b"\n")
        changed = _changed(repo_copy)
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
    for stage, item in _expanded_stages():
        name = _name(stage, item)
        want = {d for d in declared(stage, item)[1] if d.startswith(("hierars", "notebooks"))}
        got = {d for d in changed.get(name, {}) if d != "params.yaml"}
        assert got == want, f"{name}: dvc status reports deps {sorted(got)}, dvc.yaml declares {sorted(want)}"


@pytest.mark.slow  # ~25 s to build the copy, ~5 s per `dvc status` (2 busy cores)
def test_dvc_status_is_precise(repo_copy: Path) -> None:
    """One run's entry stales that run (and the stages reading all of `train`), not the other runs; a module no
    stage runs (the CLI) stales nothing."""
    path = repo_copy / "params.yaml"
    original = path.read_text()
    data = yaml.safe_load(original)
    run = next(iter(data["train"]["runs"]))
    data["train"]["runs"][run]["dropout"] = 0.3
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        got = set(_changed(repo_copy))
    finally:
        path.write_text(original)
    want = {_name(s, i) for s, i in _expanded_stages()
            if any(f"train.runs.{run}" == d or f"train.runs.{run}".startswith(d + ".")
                   for d in declared(s, i)[0])}
    assert f"train@{run}" in want and "report" in want and not any(
        w.startswith("train@") and w != f"train@{run}" for w in want)
    assert got == want, f"after editing train.runs.{run}: {sorted(got)} != {sorted(want)}"
    cli = repo_copy / "hierars" / "project" / "cli.py"
    saved = cli.read_bytes()
    cli.write_bytes(saved + b"\n# touched\n")
    try:
        assert set(_changed(repo_copy)) == set(), "editing hierars/project/cli.py (run by no stage) stales stages"
    finally:
        cli.write_bytes(saved)


# --- the read tracker itself (fast) -------------------------------------------------------------------------------

def test_tracker_records_leaves_missing_keys_and_only_the_run_used(tmp_path, monkeypatch) -> None:
    from hierars.project import load_params, params
    from hierars.training import resolve_run

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "train": {"lr": 0.001, "iterations": 5,
                                                         "runs": {"a": {"head": "flat", "loss": "ce"},
                                                                  "b": {"head": "hssn", "loss": "hssn"}}}}))
    monkeypatch.setattr(params, "_READS", set())
    monkeypatch.delenv(params.TRACK_ENV, raising=False)
    assert type(load_params(path)) is dict  # off by default: a plain dict
    monkeypatch.setenv(params.TRACK_ENV, "1")
    p = load_params(path)
    cfg = resolve_run(p["train"], "a")
    assert cfg.head == "flat" and cfg.lr == 0.001
    p.get("retrieval")  # a missing key asked for counts: adding it would change what the stage does
    reads = set(params.params_read())
    assert {"train.lr", "train.iterations", "train.runs.a.head", "train.runs.a.loss", "retrieval"} <= reads
    assert not any(r.startswith("train.runs.b") for r in reads), reads
    assert "seed" not in reads  # never asked for
    p["train"]["runs"]["a"]["lr"] = 0.5  # the tracked mapping writes through
    assert resolve_run(p["train"], "a").lr == 0.5
