"""Figures are drawn without touching the user's matplotlib: no backend switch, no pyplot."""

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: this process may have imported pyplot already (another test, a
# plugin), and the backend is chosen once per process.
SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import matplotlib
    import numpy as np

    matplotlib.use("svg")  # what a user (or a notebook) chose: not Agg
    import aim_video
    import aim_video.demo.figures
    from aim_video.engine.plots import plot_confusion, plot_curves
    from aim_video.predictor import Timeline
    from aim_video.timeline import write_timeline

    out = Path(sys.argv[1])
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_top1": 10.0 * e, "val_top1": 9.0 * e}
               for e in (1, 2)]
    plot_curves(history, out / "curves.png")
    plot_confusion(np.eye(3, dtype=int), ["a", "b", "c"], out / "confusion.png")
    starts = np.arange(4, dtype=np.float64)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]], np.float32)
    write_timeline(Timeline("v.mp4", ["walk", "run"], starts, starts + 2, probs, fps=25.0), out)
    print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
""")


def test_drawing_keeps_the_users_backend_and_never_imports_pyplot(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == ["svg", "False"]
    for name in ("curves.png", "confusion.png", "timeline.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
