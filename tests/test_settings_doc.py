"""docs/settings.md lists every params.yaml key with its meaning, and stays equal to what the models generate."""

from __future__ import annotations

import re
import sys
import typing

import yaml

from hierars.project import PROJ_ROOT

sys.path.insert(0, str(PROJ_ROOT / "scripts"))
import settings_doc  # noqa: E402

DOC = PROJ_ROOT / "docs" / "settings.md"


def _doc_keys(text: str) -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))


def _model_keys(prefix: str, model) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        keys.add(key)
        suffix, subs = settings_doc._models_in(field.annotation)
        for sub in subs:
            keys |= _model_keys(key + suffix, sub)
    return keys


def test_committed_doc_equals_the_generated_one():
    text, missing = settings_doc.render()
    assert not missing, f"settings without a meaning: {missing} (add a Field description or a MEANINGS entry)"
    assert DOC.read_text() == text, "docs/settings.md is stale: run .venv/bin/python scripts/settings_doc.py"


def test_every_model_field_is_in_the_doc_and_vice_versa():
    documented = _doc_keys(DOC.read_text())
    expected = {"seed"} | {f"paths.{k}" for k in settings_doc.PathsSection.model_fields}
    for section, model in settings_doc.section_models().items():
        expected |= _model_keys(section, model)
    assert expected - documented == set(), f"fields missing from docs/settings.md: {sorted(expected - documented)}"
    assert documented - expected == set(), f"docs/settings.md lists unknown keys: {sorted(documented - expected)}"


def test_every_key_of_params_yaml_is_documented():
    documented = _doc_keys(DOC.read_text())
    params = yaml.safe_load((PROJ_ROOT / "params.yaml").read_text())

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            generic = re.sub(r"^(transfer\.experiments)\.[^.]+", r"\1.<name>", key)
            if generic == "transfer.experiments.<name>":
                walk(v, key)
                continue
            if key.startswith("train.runs.") or key.startswith("retrieval.segmenter.") or key.startswith(
                    "transfer.train.") or key.startswith("prepare.tile_size.") or key.startswith("fidelity.pools."):
                continue  # free-form mappings (TrainConfig overrides, per-dataset values, named pools): the parent is
                # documented
            section = "." not in key and isinstance(v, dict)  # a section: its keys are documented
            assert section or key in documented or generic in documented, \
                f"params.yaml key {key} is not in docs/settings.md"
            if isinstance(v, dict) and key not in ("train.runs",):
                walk(v, key)

    walk(params, "")


def test_no_stale_meanings():
    """Every MEANINGS entry names a field that exists (a renamed field must not leave its old text behind)."""
    keys = set()
    for section, model in settings_doc.section_models().items():
        keys |= {k.replace(".<name>", "") for k in _model_keys(section, model)}
    stale = sorted(set(settings_doc.MEANINGS) - keys)
    assert not stale, f"scripts/settings_doc.py MEANINGS for unknown keys: {stale}"


def test_allowed_values_are_shown():
    text = DOC.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `train.head` |"))
    for value in typing.get_args(settings_doc.section_models()["train"].model_fields["head"].annotation):
        assert f"`{value}`" in row
    assert re.search(r"^\| `train.lr` \| float \| `0.0006` \| > 0.0 \|", text, flags=re.M)
