"""dpalbum: differentially private synthetic photo albums (hierarchical albums + PRIVIMAGE)."""

import os

# Offline by default: nothing may be fetched from a model hub at run time. A user with hub access
# can override these in the environment.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
