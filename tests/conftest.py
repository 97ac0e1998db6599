import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "emps-train"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Fixtures that start a real gunicorn: every test that uses one (directly or through another
# fixture) is `slow`, so the fast loop (-m "not slow and not browser") starts no server processes.
SERVER_FIXTURES = {"server", "backend"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def engine_dir(tmp_path_factory):
    """The CPU engine's exports (saemi.engine) go to this session's temporary folder, not ~/.cache:
    tests export random weights too. Subprocesses (servers, the CLI) inherit it."""
    import os

    old = os.environ.get("SAEMI_ENGINE_DIR")
    path = tmp_path_factory.mktemp("engine")
    os.environ["SAEMI_ENGINE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SAEMI_ENGINE_DIR", None)
    else:
        os.environ["SAEMI_ENGINE_DIR"] = old


@pytest.fixture(scope="session")
def emps_dir():
    """The shared EMPS training images (../shared/data/emps-train beside the repo)."""
    if not (SHARED_DATA / "images").is_dir():
        pytest.skip(f"shared EMPS data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def emps_images():
    """A handful of real EMPS images (paths), of varied kinds: shared, else committed stand-ins (samples.py)."""
    from samples import real_image

    return [real_image(n) for n in ["2ee0518d7a", "70f9f13af4", "aa309f6cec", "7fabcfe23f"]]


@pytest.fixture(scope="session")
def random_segmenter():
    """A randomly initialised network: for shapes and plumbing, not accuracy."""
    import torch

    from saemi.model import build_unet, make_segmenter

    torch.manual_seed(0)
    return make_segmenter(build_unet(3), device="cpu")


@pytest.fixture(scope="session")
def trained_segmenter():
    """The shipped, trained weights (bundled in saemi/model_weights/)."""
    from saemi.pipeline import default_segmenter

    return default_segmenter(None, "cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def otsu_cli(monkeypatch, capsys):
    """Run ``saemi analyze`` in-process with the Otsu baseline as the network: (exit code, stdout, stderr).

    The patch also reaches Dask workers that are threads of this process.
    """
    import saemi.cli
    import saemi.pipeline
    from saemi.baseline import OtsuSegmenter

    monkeypatch.setattr(saemi.pipeline, "default_segmenter", lambda *a, **k: OtsuSegmenter())

    def run(*args):
        code = saemi.cli.main(["analyze", *map(str, args), "--quiet"])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
