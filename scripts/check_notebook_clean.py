"""Refuses notebooks committed with outputs (scripts/test.sh runs it; stdlib only, no venv needed).

    check_notebook_clean.py NOTEBOOK...

A committed notebook holds code and prose only: outputs carry data from whoever ran it last (and, at
worst, what their database held), and they turn every re-run into a diff. Exit status 1 names each
offending notebook and cell; `scripts/notebook.sh run` writes executed copies outside the checkout.
"""

import json
import sys


def problems(path):
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            yield f"{path}: cell {index} has {len(cell['outputs'])} output(s)"
        if cell.get("execution_count") is not None:
            yield f"{path}: cell {index} has an execution count ({cell['execution_count']})"


def main(paths):
    if not paths:
        sys.exit(__doc__)
    found = [p for path in paths for p in problems(path)]
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print("clear the outputs (Jupyter: Edit > Clear Outputs of All Cells) before committing",
              file=sys.stderr)
        return 1
    print(f"{len(paths)} notebook(s) without outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
