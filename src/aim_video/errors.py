"""The errors the command line turns into one line and an exit status of their own.

`UserError` is the one base class for errors a user fixes by changing an argument, a file or
the config: `aim_video.cli.main` catches it once and prints its message on one line with exit
status 2. Each subclass's message names what to fix: the file and line, the config key, or the
device. `OutputFailed` is an output that could not be produced though nothing the user gave
was wrong (exit status 3). Anything else is a bug and keeps its traceback (exit status 70).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input: one line, naming the file, key or device, no traceback."""


class OutputFailed(Exception):
    """An output that could not be produced although the user asked for nothing wrong: it
    failed its own verification (an ONNX file whose onnxruntime logits differ from PyTorch's).
    The command line exits 3, as for an output that cannot be written."""
