"""The project layer: ``params.yaml``, the repository's paths, the notebooks' helpers and the command line.

Nothing in the core, data, training or plotting layers imports this package.
"""

from hierars.project.params import PROJ_ROOT, deep_merge, load_params, resolve_path, stage_paths
from hierars.project.stages import build_run_datasets, prepare_config, resolve_tree, run_data_dir

__all__ = [
    "PROJ_ROOT", "deep_merge", "load_params", "resolve_path", "stage_paths", "build_run_datasets", "resolve_tree",
    "run_data_dir", "prepare_config",
]
