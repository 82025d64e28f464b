"""Project settings: config loader patterns and hooks (kedro-mlflow registers its own hooks)."""

from kedro.config import OmegaConfigLoader

from dpalbum.albums.sources import RESOLVERS
from dpalbum.hooks import FlatParamsHook, MlflowLineageHook, MlflowReleaseHook, NodeTimingHook

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
    # An env (conf/local, --env) or `--params a.b=1` overrides single keys: the default
    # "destructive" merge would replace a whole top-level group (an env that sets one key of
    # `privacy` would drop the budget shares; `--params sampling.n_albums=60` would reset the
    # seed as soon as conf/local held any parameters file). Runtime params are merged into base
    # and env alike, so "soft" here covers them too.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
    # ${dpalbum.same_folder:...} and ${dpalbum.when:...}: every album entry follows albums_dir
    "custom_resolvers": RESOLVERS,
}

HOOKS = (FlatParamsHook(), MlflowLineageHook(), MlflowReleaseHook(), NodeTimingHook())
