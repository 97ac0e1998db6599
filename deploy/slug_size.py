"""The compressed size of a Heroku-style slug for a virtual environment (docs/deploy.md).

    python3 -m venv /tmp/serve-venv && /tmp/serve-venv/bin/pip install -r requirements-serve.txt
    python3 deploy/slug_size.py /tmp/serve-venv

Heroku's Python buildpack puts the interpreter and the installed packages under ``.heroku/python``
beside the app and compresses the whole (tar + gzip); slugs over 500 MB are refused. This adds up
the same three parts, each as ``tar | gzip -6``:

* the venv's ``site-packages`` (an installed ``saemi`` in it is left out: the app is counted next);
* the app: ``git archive HEAD`` of this repository (tests, docs and the weights included; a
  ``.slugignore`` would take off the tests and docs);
* the Python runtime of the venv (its ``sys.base_prefix`` less ``site-packages`` and the test
  suites), an upper bound for the buildpack's own smaller build.

The export of the weights (saemi/engine.py) is built on the dyno at first start, not in the slug.
"""

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class _Counter(io.RawIOBase):
    def __init__(self):
        self.n = 0

    def writable(self):
        return True

    def write(self, b):
        self.n += len(b)
        return len(b)


def compressed_size(paths, exclude=lambda p: False):
    """Bytes of ``tar`` of ``paths`` (name -> path) through ``gzip -6``."""
    counter = _Counter()
    with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            for name, path in paths.items():
                tar.add(str(path), arcname=name, filter=lambda ti: None if exclude(ti.name) else ti)
    return counter.n


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    venv = Path(argv[0] if argv else sys.prefix)
    py = venv / "bin" / "python"
    site, base = subprocess.run([str(py), "-c", "import sys, sysconfig; print(sysconfig.get_paths()['purelib']); "
                                 "print(sys.base_prefix)"], capture_output=True, text=True, check=True).stdout.split()
    packages = compressed_size({"site-packages": site},
                               lambda n: n.startswith(("site-packages/saemi/", "site-packages/saemi-")))
    app = len(gzip.compress(subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True,
                                           check=True).stdout, compresslevel=6))
    runtime = compressed_size({"python": base}, lambda n: "/site-packages" in n or "/test/" in n or "/tests/" in n
                              or n.endswith(("/test", "/tests")))
    mb = 1e6
    print(f"site-packages of {venv}: {packages / mb:.0f} MB")
    print(f"app (git archive HEAD):  {app / mb:.0f} MB")
    print(f"Python runtime ({base}): {runtime / mb:.0f} MB")
    print(f"slug, compressed:        {(packages + app + runtime) / mb:.0f} MB (Heroku's limit: 500 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
