"""Cross-domain mapping: which source-tree classes each target-tree class inherits from (CDSA, Eqs. 9-14).

A mapping file (YAML; built-in ones ship in ``hierars/trees/mappings/``, beside the built-in trees)::

    name: mm5b_to_crop10m
    source: mm5b            # informative; nodes are checked against the trees actually given
    target: crop10m
    gates:                  # one entry per gated target level (levels are 1-based, coarse = 1)
      - target_level: 1
        source_level: 1
        nodes:              # target node -> source nodes at `source_level` whose probabilities it sums,
          vegetation: [vegetation]
          other: complement #   or `complement` (1 - the sum over every source node mapped at this level)
      - target_level: 2
        source_level: 2
        nodes:
          cropland: [cropland]
          other: complement
    pseudo_label_leaves: [other]   # target leaves whose coarse labels come from Branch 2 (hybrid targets)

Rules (checked by :meth:`CrossDomainMapping.validate`, errors name the file and the node):

- every target node exists at its target level, every source node at its source level;
- at most one ``complement`` node per gate; it gets 1 − P(any source node mapped in the gate), which is in
  [0, 1] even when several target nodes share a source node (an expansion's children all inherit the
  refined node);
- target nodes of a gated level that are not listed are not gated (mask 1);
- ``pseudo_label_leaves`` are leaves (finest level) of the target tree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from hierars.transfer.errors import TransferError

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

__all__ = ["COMPLEMENT", "Gate", "CrossDomainMapping", "MAPPINGS_DIR", "expansion_mapping"]

COMPLEMENT = "complement"
MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "trees" / "mappings"


@dataclass
class Gate:
    """One gated target level: ``nodes[target_node] = [source nodes]`` or ``"complement"`` (0-based levels)."""

    target_level: int
    source_level: int
    nodes: dict[str, list[str] | str]


@dataclass
class CrossDomainMapping:
    """A validated-on-demand cross-domain mapping (see the module docstring for the file format).

    Attributes:
        gates: the gated target levels.
        pseudo_label_leaves: target leaves whose coarser hybrid labels come from Branch 2.
        name, source, target: informative names; ``origin`` is the file it was read from (for messages).
    """

    gates: list[Gate]
    pseudo_label_leaves: list[str] = field(default_factory=list)
    name: str = ""
    source: str = ""
    target: str = ""
    origin: str = "<mapping>"

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], origin: str = "<mapping>") -> CrossDomainMapping:
        if not isinstance(spec, Mapping) or "gates" not in spec:
            raise TransferError(f"{origin}: expected a mapping with a 'gates' list")
        unknown = set(spec) - {"name", "source", "target", "gates", "pseudo_label_leaves"}
        if unknown:
            raise TransferError(f"{origin}: unknown key(s) {sorted(unknown)}")
        gates = []
        for i, g in enumerate(spec["gates"] or []):
            if not isinstance(g, Mapping) or not {"target_level", "source_level", "nodes"} <= set(g):
                raise TransferError(f"{origin}: gate {i + 1} needs target_level, source_level and nodes")
            nodes: dict[str, list[str] | str] = {}
            for t, s in (g["nodes"] or {}).items():
                if s == COMPLEMENT:
                    nodes[str(t)] = COMPLEMENT
                elif isinstance(s, str):
                    nodes[str(t)] = [s]
                elif isinstance(s, Sequence) and all(isinstance(x, str) for x in s) and len(s) > 0:
                    nodes[str(t)] = [str(x) for x in s]
                else:
                    raise TransferError(f"{origin}: gate {i + 1}, node {t!r}: expected a list of source node "
                                        f"names or '{COMPLEMENT}', got {s!r}")
            for key in ("target_level", "source_level"):
                if not isinstance(g[key], int) or isinstance(g[key], bool) or g[key] < 1:
                    raise TransferError(f"{origin}: gate {i + 1}: {key} must be a 1-based level, got {g[key]!r}")
            gates.append(Gate(int(g["target_level"]) - 1, int(g["source_level"]) - 1, nodes))
        leaves = spec.get("pseudo_label_leaves") or []
        if isinstance(leaves, str):
            leaves = [leaves]
        return cls(gates, [str(x) for x in leaves], str(spec.get("name", "")), str(spec.get("source", "")),
                   str(spec.get("target", "")), origin)

    @classmethod
    def from_yaml(cls, path: str | Path) -> CrossDomainMapping:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"mapping file not found: {path}")
        try:
            spec = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise TransferError(f"{p}: not valid YAML: {e}") from None
        out = cls.from_dict(spec, origin=str(p))
        out.name = out.name or p.stem
        return out

    @classmethod
    def builtin(cls, name: str) -> CrossDomainMapping:
        """A mapping shipped in ``hierars/trees/mappings/<name>.yaml``."""
        path = MAPPINGS_DIR / f"{name}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"no built-in mapping {name!r}; available: {cls.builtins()}")
        return cls.from_yaml(path)

    @staticmethod
    def builtins() -> list[str]:
        return sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "target": self.target,
            "gates": [{"target_level": g.target_level + 1, "source_level": g.source_level + 1,
                       "nodes": {k: (v if isinstance(v, str) else list(v)) for k, v in g.nodes.items()}}
                      for g in self.gates],
            "pseudo_label_leaves": list(self.pseudo_label_leaves),
        }

    # ------------------------------------------------------------------ checks
    def validate(self, source: Hierarchy, target: Hierarchy) -> CrossDomainMapping:
        """Check every name against the trees; raise :class:`TransferError` naming the file and node."""
        where = self.origin
        seen_levels: set[int] = set()
        for g in self.gates:
            if not 0 <= g.target_level < target.num_levels:
                raise TransferError(f"{where}: target_level {g.target_level + 1} is not a level of target tree "
                                    f"{target.name!r} (1..{target.num_levels})")
            if not 0 <= g.source_level < source.num_levels:
                raise TransferError(f"{where}: source_level {g.source_level + 1} is not a level of source tree "
                                    f"{source.name!r} (1..{source.num_levels})")
            if g.target_level in seen_levels:
                raise TransferError(f"{where}: target level {g.target_level + 1} is gated twice")
            seen_levels.add(g.target_level)
            t_names, s_names = target.names[g.target_level], source.names[g.source_level]
            complements = [t for t, s in g.nodes.items() if s == COMPLEMENT]
            if len(complements) > 1:
                raise TransferError(f"{where}: target level {g.target_level + 1} has several complement nodes "
                                    f"{complements}; at most one")
            for t, srcs in g.nodes.items():
                if t not in t_names:
                    raise TransferError(f"{where}: target node {t!r} is not at level {g.target_level + 1} of "
                                        f"target tree {target.name!r} (nodes there: {t_names})")
                if srcs == COMPLEMENT:
                    continue
                for s in srcs:
                    if s not in s_names:
                        raise TransferError(f"{where}: source node {s!r} (mapped to {t!r}) is not at level "
                                            f"{g.source_level + 1} of source tree {source.name!r} "
                                            f"(nodes there: {s_names})")
                    if s in srcs[:srcs.index(s)]:
                        raise TransferError(f"{where}: source node {s!r} is listed twice for target node {t!r}")
        for leaf in self.pseudo_label_leaves:
            if leaf not in target.names[-1]:
                raise TransferError(f"{where}: pseudo_label_leaves names {leaf!r}, which is not a leaf of target "
                                    f"tree {target.name!r}")
        return self

    # ------------------------------------------------------------------ tensors
    def gate_matrix(self, gate: Gate, source: Hierarchy, target: Hierarchy) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine map from Branch-2 probabilities to the gate of one target level.

        Returns (A, b) with A N_t×N_s and b N_t such that ``mask[t] = Σ_s A[t, s]·p[s] + b[t]``:
        mapped node → A row = indicator of its source nodes, b = 0 (Eqs. 9-10, 13: sum of probabilities);
        complement node → A row = −(indicator of every mapped source node), b = 1 (Eqs. 12, 14);
        node not listed → A row = 0, b = 1 (not gated).
        """
        t_names, s_names = target.names[gate.target_level], source.names[gate.source_level]
        A = torch.zeros(len(t_names), len(s_names))
        b = torch.ones(len(t_names))
        mapped = torch.zeros(len(s_names))
        for t, srcs in gate.nodes.items():
            if srcs == COMPLEMENT:
                continue
            ti = t_names.index(t)
            for s in srcs:
                A[ti, s_names.index(s)] = 1.0
                mapped[s_names.index(s)] = 1.0
            b[ti] = 0.0
        for t, srcs in gate.nodes.items():
            if srcs == COMPLEMENT:
                A[t_names.index(t)] = -mapped
        return A, b

    def pseudo_label_lut(self, gate: Gate, source: Hierarchy, target: Hierarchy) -> torch.Tensor:
        """Source class (at the gate's source level) → target class (at its target level), −1 where none.

        Source nodes mapped to exactly one target node give that node; unmapped ones give the complement node
        if the gate has one, else −1; nodes shared by several target nodes give −1 (no pseudo-label: the
        ground-truth ancestor is used).
        """
        t_names, s_names = target.names[gate.target_level], source.names[gate.source_level]
        complement = next((t for t, s in gate.nodes.items() if s == COMPLEMENT), None)
        lut = torch.full((len(s_names),), -1 if complement is None else t_names.index(complement),
                         dtype=torch.long)
        shared = torch.zeros(len(s_names), dtype=torch.long)
        for t, srcs in gate.nodes.items():
            if srcs != COMPLEMENT:
                for s in srcs:
                    lut[s_names.index(s)] = t_names.index(t)
                    shared[s_names.index(s)] += 1
        return torch.where(shared > 1, torch.full_like(lut, -1), lut)  # shared: no unique pseudo-label


def expansion_mapping(source: Hierarchy, target: Hierarchy, node: str) -> CrossDomainMapping:
    """The mapping of a category expansion ``target = source.extend(node, children)``.

    Target levels 1..L_s are the source levels (identity: every node maps to itself); the new finest level
    maps the refined node's children to ``node`` and every single-child continuation to its source leaf.
    No complement is needed (the map covers every source class); no pseudo-label leaves (the target
    ground truth determines every ancestor).
    """
    Ls = source.num_levels
    if target.num_levels != Ls + 1:
        raise TransferError(f"target tree {target.name!r} has {target.num_levels} levels; an expansion of "
                            f"{source.name!r} has {Ls + 1}")
    gates = [Gate(lvl, lvl, {n: [n] for n in source.names[lvl]}) for lvl in range(Ls)]
    parents = target.parents[-1].tolist()
    finest = {leaf: [target.names[Ls - 1][parents[i]]] for i, leaf in enumerate(target.names[Ls])}
    gates.append(Gate(Ls, Ls - 1, finest))
    return CrossDomainMapping(gates, [], name=f"{source.name}_to_{target.name}", source=source.name,
                              target=target.name, origin=f"<expansion of {source.name!r} at {node!r}>")
