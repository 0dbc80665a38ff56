"""Label trees: levels, parents, valid root-to-leaf paths, lifting and raw-label encoding.

(Over 400 lines on purpose: everything here answers a question asked of one object, the tree — building and
validating it, reading it from YAML, and mapping labels through it; split, it would scatter one invariant.)

A :class:`Hierarchy` is the one object every other part of hierars asks about the label tree.
Levels are numbered coarse to fine, ``0 .. L-1``; level ``L-1`` holds the leaves. Every leaf sits
at the same depth, so a strict tree has exactly one path per leaf and ``paths`` is ``P x L`` with
``P = num_classes[-1]`` (row ``i`` is the path of finest class ``i``).

YAML format (built-in trees ship as package data in ``hierars/trees/*.yaml``; :meth:`Hierarchy.builtin`)::

    name: gid15
    tree:                       # nested mapping coarse -> fine; the last level is a list of leaves
      vegetation:
        farmland: [paddy_field, irrigated_land]
        forest: [arbor_woodland]        # single-child chains are fine
      water:
        water: [river, lake]
    label_values:               # leaf -> raw value(s) in the dataset's label rasters
      paddy_field: 4
      irrigated_land: [5, 6]
    ignore_values: [15]         # raw values that mean "unlabelled"
    ignore_index: 255           # optional, default 255
    colors:                     # optional: node name -> "#rrggbb" (any level); others are derived
      water: "#3c78d8"

Raw values that are neither mapped nor in ``ignore_values`` also become ``ignore_index`` at
every level (:meth:`Hierarchy.encode`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

__all__ = ["Hierarchy", "HierarchyError"]

_TREES_DIR = Path(__file__).resolve().parent / "trees"


class HierarchyError(ValueError):
    """A label tree (or a label array given to it) is malformed. The message names the problem."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise HierarchyError(f"duplicate name {key!r} under the same parent (line {line})")
        if value_node in loader.recursive_objects:  # an alias (*x) to a node that contains it
            raise HierarchyError(f"cycle: node {key!r} (line {line}) contains itself through a YAML alias; "
                                 "a tree cannot loop back to an ancestor")
        seen[key] = loader.construct_object(value_node, deep=deep)
    return seen


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _leaf_depths(tree: Any, where: str, ancestors: tuple[int, ...] = (), level: int = 1) -> list[int]:
    """Depth (number of levels) of every leaf below ``tree``; validates node types and finds cycles on the way."""
    if isinstance(tree, Mapping):
        if id(tree) in ancestors:
            raise HierarchyError(f"cycle: node {where!r} contains one of its own ancestors")
        if not tree:
            raise HierarchyError(f"node {where!r} has no children: level {level} would be empty below it "
                                 "(give it a mapping of children or a list of leaves)")
        depths = []
        for name, sub in tree.items():
            if not isinstance(name, str) or not name:
                raise HierarchyError(f"class names must be non-empty strings; got {name!r} under {where!r}")
            depths += [d + 1 for d in _leaf_depths(sub, name, (*ancestors, id(tree)), level + 1)]
        return depths
    if isinstance(tree, (list, tuple)):
        if not tree:
            raise HierarchyError(f"node {where!r} has an empty list of leaves (level {level} would be empty below it)")
        for leaf in tree:
            if not isinstance(leaf, str) or not leaf:
                raise HierarchyError(
                    f"leaves must be non-empty strings; got {leaf!r} under {where!r} "
                    "(to nest deeper, write a mapping instead of a list)"
                )
        if len(set(tree)) != len(tree):
            dup = sorted({x for x in tree if list(tree).count(x) > 1})
            raise HierarchyError(f"duplicate leaf name(s) {dup} under {where!r}")
        return [1] * len(tree)
    if tree is None:
        raise HierarchyError(f"node {where!r} has no children (nothing after '{where}:'): level {level} would be "
                             "empty below it; give it a list of leaves or a mapping of children")
    raise HierarchyError(
        f"node {where!r} must map to a mapping (inner node) or a list of leaf names, got {type(tree).__name__}"
    )


class Hierarchy:
    """A strict label tree with ``L >= 2`` levels, all leaves at depth ``L``.

    Args:
        tree: nested mapping coarse -> fine whose innermost values are lists of leaf names.
        label_values: leaf name -> raw dataset value or list of values (used by :meth:`encode`).
        ignore_values: raw values that mean "unlabelled"; they and unmapped values encode to
            ``ignore_index``.
        ignore_index: label used for ignored pixels at every level (default 255).
        name: a short name, e.g. ``"mm5b"``.
        colors: optional node name -> colour (``"#rrggbb"`` or ``[r, g, b]``) for figures and map styles.

    Attributes:
        num_levels: ``L``.
        num_classes: classes per level, coarse to fine, e.g. ``(4, 9, 18)``.
        names: ``names[l][c]`` is the name of class ``c`` at level ``l``.
        parents: list of ``L`` LongTensors; ``parents[0]`` is all ``-1``; ``parents[l][c]`` is the
            index at level ``l-1`` of the parent of class ``c`` at level ``l``.
        paths: LongTensor ``(P, L)``; row ``i`` is the root-to-leaf path of leaf ``i``.
        leaf_raw_values: leaf name -> list of raw values.
    """

    def __init__(
        self,
        tree: Mapping,
        label_values: Mapping[str, int | Sequence[int]] | None = None,
        ignore_values: Sequence[int] = (),
        ignore_index: int = 255,
        name: str = "hierarchy",
        colors: Mapping[str, str | Sequence[int]] | None = None,
    ) -> None:
        if not isinstance(tree, Mapping) or not tree:
            raise HierarchyError(
                "`tree` must be a non-empty mapping of root classes to their children "
                "(a hierarchy has at least 2 levels)"
            )
        depths = _leaf_depths(tree, "<root>")
        if len(set(depths)) != 1:
            raise HierarchyError(
                "all leaves must sit at the same depth (use single-child chains such as "
                f"forest: [forest] to pad short branches); found leaf depths {sorted(set(depths))}"
            )
        self.num_levels = depths[0]  # >= 2: roots map to lists of leaves at the least
        if not isinstance(ignore_index, int) or ignore_index < 0:
            raise HierarchyError(f"ignore_index must be a non-negative int, got {ignore_index!r}")
        self.name = str(name)
        self.ignore_index = ignore_index
        self._tree = _to_plain(tree)

        names: list[list[str]] = [[] for _ in range(self.num_levels)]
        parents: list[list[int]] = [[] for _ in range(self.num_levels)]
        paths: list[list[int]] = []

        def walk(node: Any, level: int, parent: int, prefix: list[int]) -> None:
            items = node.items() if isinstance(node, Mapping) else ((leaf, None) for leaf in node)
            for cname, sub in items:
                if cname in names[level]:
                    raise HierarchyError(
                        f"duplicate name {cname!r} at level {level + 1}: names must be unique within a level"
                    )
                idx = len(names[level])
                names[level].append(cname)
                parents[level].append(parent)
                if sub is None:
                    paths.append(prefix + [idx])
                else:
                    walk(sub, level + 1, idx, prefix + [idx])

        walk(tree, 0, -1, [])
        self.names = names
        self.num_classes = tuple(len(n) for n in names)
        if max(self.num_classes) > ignore_index:
            raise HierarchyError(f"{max(self.num_classes)} classes at one level collide with ignore_index")
        self.parents = [torch.tensor(p, dtype=torch.long) for p in parents]
        self.paths = torch.tensor(paths, dtype=torch.long)
        strides = [int(np.prod(self.num_classes[i + 1 :])) for i in range(self.num_levels)]
        self._strides = torch.tensor(strides, dtype=torch.long)
        lut = torch.full((int(np.prod(self.num_classes)),), -1, dtype=torch.long)
        lut[(self.paths * self._strides).sum(1)] = torch.arange(len(paths))
        self._path_lut = lut

        self.leaf_raw_values = self._check_label_values(label_values or {})
        self.ignore_values = [int(v) for v in ignore_values]
        clash = sorted(set(self.ignore_values) & {v for vs in self.leaf_raw_values.values() for v in vs})
        if clash:
            raise HierarchyError(f"raw value(s) {clash} are both mapped to a leaf and listed in ignore_values")
        self.colors = self._check_colors(colors or {})

    # ------------------------------------------------------------------ construction
    def _check_colors(self, colors: Mapping) -> dict[str, tuple[int, int, int]]:
        known = {n for level in self.names for n in level}
        out = {}
        for node, c in dict(colors).items():
            if node not in known:
                raise HierarchyError(f"colors names {node!r}, which is not a node of the tree")
            if isinstance(c, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", c):
                rgb = tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))
            elif isinstance(c, Sequence) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c):
                rgb = tuple(int(v) for v in c)
            else:
                raise HierarchyError(f"colors[{node!r}] must be '#rrggbb' or [r, g, b] in 0..255, got {c!r}")
            out[str(node)] = rgb
        return out

    def _check_label_values(self, label_values: Mapping) -> dict[str, list[int]]:
        if not isinstance(label_values, Mapping):
            raise HierarchyError("`label_values` must map leaf names to a raw value or a list of raw values")
        leaves = set(self.names[-1])
        out: dict[str, list[int]] = {}
        owner: dict[int, str] = {}
        for leaf, values in label_values.items():
            if leaf not in leaves:
                raise HierarchyError(
                    f"label_values names {leaf!r}, which is not a leaf of the tree (leaves: {sorted(leaves)})"
                )
            vals = [values] if isinstance(values, (int, np.integer)) else values
            if not isinstance(vals, (list, tuple)) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals
            ):
                raise HierarchyError(f"label_values[{leaf!r}] must be an int or a list of ints, got {values!r}")
            for v in vals:
                if int(v) < 0:
                    raise HierarchyError(f"label_values[{leaf!r}] has a negative raw value {v}")
                if int(v) in owner:
                    raise HierarchyError(f"raw value {v} is mapped twice: to {owner[int(v)]!r} and to {leaf!r}")
                owner[int(v)] = leaf
            out[leaf] = [int(v) for v in vals]
        return out

    @classmethod
    def builtin(cls, name: str) -> Hierarchy:
        """One of the trees shipped with the package (``hierars/trees/<name>.yaml``); see :meth:`builtins`."""
        known = cls.builtins()
        if name not in known:
            raise HierarchyError(f"no built-in tree {name!r}; built-ins: {', '.join(known)} (or give a YAML path)")
        return cls.from_yaml(_TREES_DIR / f"{name}.yaml")

    @staticmethod
    def builtins() -> list[str]:
        """Names of the built-in trees, sorted."""
        return sorted(p.stem for p in _TREES_DIR.glob("*.yaml"))

    @classmethod
    def load(cls, tree: str | Path | Hierarchy) -> Hierarchy:
        """A Hierarchy from an object, a YAML path (``.yaml`` / ``.yml``) or a built-in name."""
        if isinstance(tree, Hierarchy):
            return tree
        if Path(tree).suffix in (".yaml", ".yml"):
            return cls.from_yaml(tree)
        return cls.builtin(str(tree))

    @classmethod
    def from_yaml(cls, path: str | Path) -> Hierarchy:
        """Read a label tree from YAML (see the module docstring for the format). Relative paths are from the cwd."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"hierarchy file not found: {p}")
        try:
            spec = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)
        except HierarchyError as e:
            raise HierarchyError(f"{p}: {e}") from None
        except yaml.YAMLError as e:
            raise HierarchyError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(spec, Mapping) or "tree" not in spec:
            raise HierarchyError(f"{p}: expected a mapping with a 'tree' key")
        unknown = set(spec) - {"name", "tree", "label_values", "ignore_values", "ignore_index", "colors"}
        if unknown:
            raise HierarchyError(f"{p}: unknown key(s) {sorted(unknown)}")
        try:
            return cls(
                spec["tree"],
                label_values=spec.get("label_values") or {},
                ignore_values=spec.get("ignore_values") or (),
                ignore_index=spec.get("ignore_index", 255),
                name=spec.get("name", p.stem),
                colors=spec.get("colors") or {},
            )
        except HierarchyError as e:
            raise HierarchyError(f"{p}: {e}") from None

    def palettes(self) -> list[np.ndarray]:
        """Colours of every class, one uint8 array ``N_l x 3`` (RGB) per level, coarse to fine.

        Colours named in the tree (``colors``) are used as given; the others are derived from the tree
        (children shaded from their parent's hue; :func:`hierars.palette.derive_palettes`).
        """
        from hierars.palette import derive_palettes

        return derive_palettes(self, self.colors)

    def to_dict(self) -> dict:
        """Plain-data form that :class:`Hierarchy` and YAML round-trip."""
        return {
            "name": self.name,
            "tree": self._tree,
            "label_values": {k: list(v) for k, v in self.leaf_raw_values.items()},
            "ignore_values": list(self.ignore_values),
            "ignore_index": self.ignore_index,
            **({"colors": {k: "#" + bytes(v).hex() for k, v in self.colors.items()}} if self.colors else {}),
        }

    def extend(
        self,
        node: str,
        children: Sequence[str],
        label_values: Mapping[str, int | Sequence[int]] | None = None,
    ) -> Hierarchy:
        """Return a new hierarchy with one more level in which leaf ``node`` is refined into ``children``.

        Every other leaf gets a single child of the same name, so all leaves stay at one depth
        (category expansion, e.g. ``cropland -> corn, soybean, spring_wheat, other_crop``). Raw
        values of the other leaves carry over; ``node``'s raw values are dropped unless
        ``label_values`` re-assigns them to the new children.
        """
        if node not in self.names[-1]:
            raise HierarchyError(f"can only extend a leaf; {node!r} is not a leaf of {self.name!r}")
        children = list(children)
        if not children or not all(isinstance(c, str) and c for c in children):
            raise HierarchyError("children must be a non-empty list of names")

        def grow(sub: Any) -> Any:
            if isinstance(sub, Mapping):
                return {k: grow(v) for k, v in sub.items()}
            return {leaf: (children if leaf == node else [leaf]) for leaf in sub}

        new_values = {k: v for k, v in self.leaf_raw_values.items() if k != node}
        for k, v in (label_values or {}).items():
            new_values[k] = v
        return Hierarchy(
            grow(self._tree),
            label_values=new_values,
            ignore_values=self.ignore_values,
            ignore_index=self.ignore_index,
            name=f"{self.name}+{node}",
            colors=self.colors,
        )

    # ------------------------------------------------------------------ label operations
    def lift(self, labels: torch.Tensor, level: int, from_level: int = -1) -> torch.Tensor:
        """Map class indices at ``from_level`` (default: finest) to their ancestors at ``level``.

        Args:
            labels: LongTensor of any shape with indices at ``from_level``; ``ignore_index`` stays.
            level: target level (``level <= from_level``; negative counts from the end).

        Returns:
            LongTensor of the same shape with indices at ``level``.
        """
        L = self.num_levels
        lvl, src = level % L, from_level % L
        if not -L <= level < L or not -L <= from_level < L:
            raise IndexError(f"level must be in [-{L}, {L - 1}]")
        if lvl > src:
            raise HierarchyError(f"cannot lift from level {src} down to the finer level {lvl}")
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point:
            raise TypeError("labels must be an integer tensor")
        # map: class at `src` -> class at `lvl` (first path through each src class decides).
        lut = torch.full((self.num_classes[src] + 1,), self.ignore_index, dtype=torch.long)
        lut[self.paths[:, src]] = self.paths[:, lvl]
        ign = labels == self.ignore_index
        bad = ~ign & ((labels < 0) | (labels >= self.num_classes[src]))
        if bad.any():
            raise HierarchyError(
                f"labels at level {src} must be in [0, {self.num_classes[src] - 1}] or {self.ignore_index}; "
                f"found {torch.unique(labels[bad])[:10].tolist()}"
            )
        idx = torch.where(ign, self.num_classes[src], labels.long())
        return lut.to(labels.device)[idx]

    def lift_all(self, fine: torch.Tensor) -> torch.Tensor:
        """Finest-level labels ``(...)`` -> labels of every level ``(L, ...)`` (ignore stays ignore)."""
        return torch.stack([self.lift(fine, lvl) for lvl in range(self.num_levels)])

    def raw_lut(self, max_value: int | None = None) -> np.ndarray:
        """Lookup table raw value -> leaf index (``ignore_index`` where unmapped), length ``max_value+1``."""
        top = max([v for vs in self.leaf_raw_values.values() for v in vs] + [0])
        n = max(top, max_value or 0) + 1
        lut = np.full(n, self.ignore_index, dtype=np.int64)
        for leaf, values in self.leaf_raw_values.items():
            lut[values] = self.names[-1].index(leaf)
        return lut

    def encode(self, raw: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw dataset label values -> labels of every level.

        Args:
            raw: integer array ``(H, W)`` (any shape works) of the dataset's raw label values.

        Returns:
            LongTensor ``(L, H, W)``; unmapped values and ``ignore_values`` are ``ignore_index``
            at every level.
        """
        if not self.leaf_raw_values:
            raise HierarchyError(f"hierarchy {self.name!r} has no label_values; cannot encode raw labels")
        arr = raw.cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        if not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise HierarchyError(f"raw labels must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        lut = self.raw_lut(int(arr.max()) if arr.size else 0)
        fine = np.where(arr >= 0, lut[np.clip(arr, 0, None)], self.ignore_index)
        return self.lift_all(torch.from_numpy(fine))

    def path_id(self, labels: torch.Tensor) -> torch.Tensor:
        """Path (= leaf) index of each pixel's per-level labels, or -1 where they form no valid path.

        Args:
            labels: LongTensor with the level axis at dim -3, ``(L, H, W)`` or ``(B, L, H, W)``.

        Returns:
            LongTensor ``(H, W)`` or ``(B, H, W)``; -1 also where any level is ``ignore_index``.
        """
        labels = torch.as_tensor(labels)
        if labels.dim() < 3 or labels.shape[-3] != self.num_levels:
            raise HierarchyError(
                f"expected the level axis ({self.num_levels} levels) at dim -3, got shape {tuple(labels.shape)}"
            )
        labels = labels.long()
        top = torch.tensor(self.num_classes, device=labels.device).view(-1, 1, 1) - 1
        clamped = torch.clamp(labels, min=torch.zeros_like(top), max=top)
        ok = (clamped == labels).all(-3)  # every level in range (fewer passes than two comparisons)
        pid = self._path_lut.to(labels.device)[(clamped * self._strides.to(labels.device).view(-1, 1, 1)).sum(-3)]
        return torch.where(ok, pid, -1)

    # ------------------------------------------------------------------ display
    def __len__(self) -> int:
        return self.num_levels

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchy) and self.to_dict() | {"name": ""} == other.to_dict() | {"name": ""}

    def __repr__(self) -> str:
        return f"Hierarchy(name={self.name!r}, num_classes={self.num_classes}, paths={len(self.paths)})"

    def tree_str(self) -> str:
        """An indented print of the tree with each class's index at its level."""
        lines = [repr(self)]

        def walk(node: Any, level: int, indent: str) -> None:
            items = node.items() if isinstance(node, Mapping) else ((leaf, None) for leaf in node)
            for cname, sub in items:
                idx = self.names[level].index(cname)
                raw = self.leaf_raw_values.get(cname) if sub is None else None
                suffix = f"  <- raw {raw}" if raw else ""
                lines.append(f"{indent}L{level + 1}[{idx}] {cname}{suffix}")
                if sub is not None:
                    walk(sub, level + 1, indent + "  ")

        walk(self._tree, 0, "  ")
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython / JupyterLab display
        p.text(self.tree_str())


def _to_plain(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _to_plain(v) for k, v in tree.items()}
    return list(tree)
