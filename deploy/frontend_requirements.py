"""Print the requirements of the page-only front end (Dockerfile target ``frontend``), one a line.

The front end (``app:server`` with ``SAEMI_BACKEND_URL``) never imports torch: it needs the
package's core requirements less the network's (the CPU engine: onnx, openvino) plus the ``web``
and ``ocr`` extras, all read from ``pyproject.toml``. Install them pinned by the lock::

    python deploy/frontend_requirements.py > frontend.txt
    pip install -c requirements.txt -r frontend.txt

tests/test_deploy.py checks that this list covers every module the remote page imports.
"""

import re
import sys
import tomllib
from pathlib import Path

NETWORK = {"torch", "torchvision", "fastai", "onnx", "openvino", "onnxruntime"}
EXTRAS = ("web", "ocr")


def name_of(requirement):
    """The distribution name of a requirement string ("torch>=2.4" -> "torch")."""
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower()


def frontend_requirements(pyproject=None):
    project = tomllib.loads(Path(pyproject or Path(__file__).resolve().parents[1] / "pyproject.toml")
                            .read_text())["project"]
    core = [r for r in project["dependencies"] if name_of(r) not in NETWORK]
    return core + [r for extra in EXTRAS for r in project["optional-dependencies"][extra]]


if __name__ == "__main__":
    sys.stdout.write("".join(r + "\n" for r in frontend_requirements(*sys.argv[1:2])))
