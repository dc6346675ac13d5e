"""The one base class for errors a user fixes by changing an argument, a file or the config.

The command line catches `UserError` once (in `aim_video.cli.main`) and prints its message on
one line with exit status 2; anything else is a bug and keeps its traceback. Each subclass's
message names what to fix: the file and line, the config key, or the device.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input: one line, naming the file, key or device, no traceback."""


class OutputFailed(Exception):
    """An output that could not be produced although the user asked for nothing wrong: it
    failed its own verification (an ONNX file whose onnxruntime logits differ from PyTorch's).
    The command line exits 3, as for an output that cannot be written."""
