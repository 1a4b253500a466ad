"""Executes a notebook headless (nbclient); run by `scripts/notebook.sh run`, inside the notebook venv.

    notebook_run.py NOTEBOOK OUT_DIR

Writes OUT_DIR/<notebook name> (the executed copy, outputs included) and OUT_DIR/figures/*.png (the
notebook saves its figures there through NOTEBOOK_FIGURES_DIR). Exit status: 0 when every cell ran, or
when the notebook stopped cleanly with StopAnalysis (e.g. an empty database); 1 on any other cell
error, after printing the error's message.
"""

import os
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

CELL_TIMEOUT_SECS = 300


def main(notebook_path, out_dir):
    figures = os.path.join(out_dir, "figures")
    os.makedirs(figures, exist_ok=True)
    for stale in os.listdir(figures):
        if stale.endswith(".png"):
            os.remove(os.path.join(figures, stale))
    os.environ["NOTEBOOK_FIGURES_DIR"] = os.path.abspath(figures)

    notebook = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECS,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(notebook_path))}},
    )
    started = time.monotonic()
    status = 0
    try:
        client.execute()
    except CellExecutionError as e:
        if e.ename == "StopAnalysis":
            print(f"notebook stopped: {e.evalue}")
        else:
            print(f"notebook failed: {e.ename}: {e.evalue}", file=sys.stderr)
            if e.ename not in ("AnalysisError",):
                print(str(e), file=sys.stderr)
            status = 1
    finally:
        executed = os.path.join(out_dir, os.path.basename(notebook_path))
        nbformat.write(notebook, executed)
    # What the cells printed, for the log (tables and figures are in the executed copy).
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                sys.stdout.write(output.get("text", ""))
    drawn = sorted(f for f in os.listdir(figures) if f.endswith(".png"))
    print(f"executed copy: {executed}")
    print(f"figures: {', '.join(drawn) if drawn else 'none'} in {figures}")
    print(f"took {time.monotonic() - started:.1f} s")
    return status


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
