"""Where a run's albums come from: the demo world's folder, or a folder the user names.

One parameter moves the albums: ``albums_dir`` (``kedro run --params "albums_dir=PATH"``, or
``albums_dir:`` in ``conf/<env>/globals.yml``). Every catalog entry and parameter that depends on
it goes through the two config resolvers below (registered in ``settings.py``), so none can
disagree with another:

- ``${dpalbum.same_folder:A,B}``: whether two paths name the same folder. The catalog compares the
  run's ``albums_dir`` with the demo world's own albums folder (``globals.demo_albums_dir``):
  true on the embedded default, false on a user's albums.
- ``${dpalbum.when:FLAG,A,B}``: ``A`` when ``FLAG`` is true, else ``B`` (e.g. the demo world's
  held-out albums, or none).

On a user's albums the demo world writes only public data: its album, index and ground-truth
entries are not writable, and the demo world's held-out albums, canaries and ground truth are not
read (they describe the demo world's albums, not the user's).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def same_folder(first: Any, second: Any) -> bool:
    """Whether two paths (relative to the working directory, ``~`` expanded) name one folder."""
    if first is None or second is None:
        return False

    def absolute(path: Any) -> str:
        return os.path.normpath(Path(str(path)).expanduser().absolute())

    return absolute(first) == absolute(second)


def when(flag: Any, if_true: Any, if_false: Any) -> Any:
    """``if_true`` when ``flag`` is true (a bool or "true"/"false"), else ``if_false``."""
    if isinstance(flag, str):
        flag = flag.strip().lower() == "true"
    return if_true if flag else if_false


RESOLVERS = {"dpalbum.same_folder": same_folder, "dpalbum.when": when}
