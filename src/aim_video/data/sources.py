"""Where videos come from: the inputs of predict, extract and timeline, and the one rule for a
list file's relative entries.

The rule, for every command and the training's lists alike: a list's relative entries are under
the root when one is given (`--root`, `data.root`), else beside the list file, which is how
make-synthetic and prepare write them. So the same list names the same files for `predict`,
`eval --set data.val=LIST` and training, from any working folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from aim_video.data.annotations import VIDEO_EXTENSIONS, load_annotations
from aim_video.errors import UserError


class InputError(UserError, FileNotFoundError):
    """An input to predict / extract / timeline that names nothing usable."""


def list_root(annotation: str | os.PathLike[str],
              root: str | os.PathLike[str] | None) -> str:
    """The folder that the relative entries of the list `annotation` are under: `root` when
    given, else the folder the list is in."""
    if root is not None:
        return os.fspath(root)
    return str(Path(annotation).parent)


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, root: str | None = None,
    frame_folders: bool = False,
) -> list[str]:
    """Video paths from files, folders of videos and list files, in the order given.

    A file with a video extension is a video; a folder is searched recursively for videos (or
    is itself a video with `frame_folders`); any other file is an annotation list in a format
    `load_annotations` reads (its labels are ignored), whose relative entries follow
    `list_root`. Missing files stay in the list, to be reported as unreadable.

    Raises:
        InputError: a folder without videos.
    """
    videos: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir() and not frame_folders:
            found = sorted(p for p in item.rglob("*")
                           if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise InputError(f"{item}: no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})")
            videos += [str(p) for p in found]
        elif item.is_file() and item.suffix.lower() not in VIDEO_EXTENSIONS and not frame_folders:
            videos += [r.path for r in load_annotations(item, root=list_root(item, root),
                                                        labels=False).records]
        else:
            videos.append(str(item))
    return videos
