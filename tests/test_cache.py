"""The shared re-analysis cache (issue 16): stores, ids, fidelity, several workers, Redis.

Real components: gunicorn with 3 workers, two app processes sharing a real
``redis-server`` started here on a free loopback port, and the real network.
"""

import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from livesrv import REPO, Server, free_port, gunicorn_command, rss_kb, weights_available
from synth import disc_labels, grid_of_discs_png, micrograph, png_bytes as png

from saemi.cache import DiskStore, RedisStore, check_key, decode_segmentation, encode_segmentation
from saemi.errors import SaemiError

API = "/api/v1"
DEMO = (REPO / "saemi" / "ui" / "assets" / "demo.png").read_bytes()


def discs_png(h, w, seed=0):
    return grid_of_discs_png(h, w, r=12, step=34, seed=seed)


def twelve_megapixels(seed):
    """A 4000x3000 micrograph of about 3800 discs: a tile repeated, then its own noise."""
    tile = micrograph(disc_labels((300, 400), [(y, x, 20) for y in range(28, 300, 56) for x in range(28, 400, 56)]),
                      noise=0)[..., 0]
    img = np.tile(tile, (10, 10)).astype(np.int16)
    img += np.random.default_rng(seed).integers(-8, 9, img.shape, dtype=np.int16)
    return png(np.clip(img, 0, 255).astype(np.uint8))


# --- stores ------------------------------------------------------------------------------------

def test_keys_cannot_name_paths():
    for bad in ("../etc/passwd", "a/b", "", "x" * 200, None, 5, "short"):
        with pytest.raises(SaemiError) as err:
            check_key(bad)
        assert err.value.code == "not_found"
    assert check_key("seg-" + "a" * 40)


def _store_contract(store):
    """LRU eviction to the byte bound, touch, delete: the same for every store."""
    blob = bytes(400)
    for k in range(5):
        store.put(f"key-{k:08d}", blob)
        time.sleep(0.02)
    assert store.size_bytes() <= store.max_bytes == 1000
    assert store.get("key-00000000") is None and store.get("key-00000001") is None  # the oldest went first
    assert store.get("key-00000004") == blob and store.get("key-00000003") == blob
    time.sleep(0.02)
    assert store.get("key-00000003") == blob  # used: now the most recent
    store.put("key-00000005", blob)
    assert store.get("key-00000004") is None and store.get("key-00000003") == blob
    assert store.touch("key-00000003") and not store.touch("key-00000004")
    store.delete("key-00000003")
    assert store.get("key-00000003") is None
    with pytest.raises(SaemiError) as err:
        store.put("key-toolarge", bytes(1001))
    assert err.value.code == "too_large"


def test_disk_store_is_bounded_in_bytes_and_least_recently_used_goes_first(tmp_path):
    _store_contract(DiskStore(tmp_path, 1000, 3600))
    assert not list(tmp_path.glob(".tmp-*")), "no temporary files left behind"


def test_disk_store_expires_unused_records(tmp_path):
    store = DiskStore(tmp_path, 10_000, ttl=0.2)
    store.put("key-expiring", b"x")
    assert store.get("key-expiring") == b"x"
    time.sleep(0.4)
    assert store.get("key-expiring") is None and store.count() == 0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if not exe:
        pytest.skip("Debian package 'redis-server' is not installed (apt-get install redis-server); "
                    ".ci/run installs it")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_store_has_the_same_contract(redis_url):
    store = RedisStore(redis_url, 1000, 3600, prefix="contract:")
    _store_contract(store)
    expiring = RedisStore(redis_url, 1000, ttl=1, prefix="ttl:")
    expiring.put("key-expiring", b"x")
    time.sleep(2.2)
    assert expiring.get("key-expiring") is None


# --- what is stored ----------------------------------------------------------------------------

@pytest.mark.slow
def test_compact_record_reanalyses_like_the_full_probabilities(emps_images, trained_segmenter):
    """uint8 probabilities at the network's scale: counts identical, areas within 0.1 %."""
    from saemi.card import read_card
    from saemi.pipeline import Settings, segment, split_and_measure

    settings = Settings.from_dict(None, defaults=read_card()["postprocess"])
    for path in emps_images:
        seg = segment(path, trained_segmenter)
        blob = encode_segmentation(seg)
        back = decode_segmentation(blob)
        h, w = seg.image.shape[:2]
        assert len(blob) < 1.2 * h * w * 3 + 2 * 3 * (h // 2 + 1) * (w // 2 + 1)  # vs 12 B/px as float32
        for s in (settings, Settings(**{**settings.__dict__, "min_distance": 7, "merge_threshold": 0.0})):
            full, compact = split_and_measure(seg, s), split_and_measure(back, s)
            assert compact.summary["count"] == full.summary["count"], path.name
            a, b = full.table.area_px.sum(), compact.table.area_px.sum()
            assert abs(a - b) <= 0.001 * a, (path.name, a, b)
        assert np.array_equal(back.image, seg.image) and back.banner_box == seg.banner_box


def test_ids_are_random_and_uploads_of_the_same_file_stay_apart(tmp_path, random_segmenter):
    from saemi.service import AnalysisService

    calls = []

    class Counting:
        card, device = random_segmenter.card, random_segmenter.device

        def predict(self, image):
            calls.append(1)
            return random_segmenter.predict(image)

    svc = AnalysisService(lambda: Counting(), store=DiskStore(tmp_path, 10**7, 3600))
    data = discs_png(120, 160)
    a = svc.segment(data, "alice.png")
    b = svc.segment(data, "bob.png")
    assert len(calls) == 1 and b["cached"]
    assert a["image_id"] != b["image_id"] and len(a["image_id"]) >= 24
    import hashlib

    assert hashlib.sha256(data).hexdigest()[:24] not in (a["image_id"], b["image_id"])
    assert svc.analyze(image_id=a["image_id"], include_images=False)["filename"] == "alice.png"
    assert svc.analyze(image_id=b["image_id"], include_images=False)["filename"] == "bob.png"
    # a second service on the same store (another worker) sees both, without running the network
    other = AnalysisService(lambda: Counting(), store=DiskStore(tmp_path, 10**7, 3600))
    again = other.analyze(image_id=a["image_id"], settings={"min_distance": 5}, include_images=False)
    assert again["cached"] and again["filename"] == "alice.png"
    # the CSV download follows the last analysis, whichever worker it ran on
    text, _ = svc.particles_csv(a["image_id"])
    assert text.count("\n") == again["summary"]["count"] + 1
    assert len(calls) == 1


def test_evicted_image_is_404_and_can_come_back_under_its_id(tmp_path, random_segmenter):
    from saemi.service import AnalysisService

    svc = AnalysisService(lambda: random_segmenter, store=DiskStore(tmp_path, 60_000, 3600))
    first = svc.segment(discs_png(120, 160, seed=1), "first.png")
    for k in range(3):
        svc.segment(discs_png(120, 160, seed=10 + k), f"x{k}.png")
    with pytest.raises(SaemiError) as err:
        svc.analyze(image_id=first["image_id"])
    assert err.value.code == "not_found"
    again = svc.segment(discs_png(120, 160, seed=1), "first.png", image_id=first["image_id"])
    assert again["image_id"] == first["image_id"]
    assert svc.analyze(image_id=first["image_id"], include_images=False)["filename"] == "first.png"
    # an id that is still known is left alone: nobody overwrites another upload's handle
    kept = svc.segment(discs_png(120, 160, seed=2), "other.png", image_id=first["image_id"])
    assert kept["filename"] == "first.png"
    # an id that no upload could have had is a malformed request (400), not an expired one (404)
    with pytest.raises(SaemiError) as err:
        svc.segment(discs_png(120, 160, seed=2), "other.png", image_id="../../etc")
    assert err.value.code == "bad_request"


# --- several workers and replicas ---------------------------------------------------------------

def _start(tmp_path, name, workers=1, **env):
    if not weights_available():
        pytest.fail("model weights missing: saemi/model_weights/saemi_unet_resnet18.pt must exist")
    port = free_port()
    cmd = gunicorn_command("saemi.api:create_app()", threads=2, workers=workers, port=port)
    cmd[1:1] = ["--access-logformat", "pid=%(p)s %(r)s %(s)s"]
    return Server(cmd, port=port, log_path=tmp_path / f"{name}.log",
                  env={"SAEMI_DEVICE": "cpu", "OMP_NUM_THREADS": "1", **env})


def _reanalyse_everywhere(servers, ids, n=60):
    """n re-analyses by id, round-robin over servers and images, 4 at a time; returns failures."""
    def one(k):
        srv, image_id = servers[k % len(servers)], ids[k % len(ids)]
        # a new connection each time, so that the kernel hands requests to every worker
        r = requests.post(srv.url + API + "/analyze", timeout=120, headers={"Connection": "close"},
                          json={"image_id": image_id, "min_distance": 5 + k % 20, "include_images": False})
        return None if r.status_code == 200 and r.json()["image_id"] == image_id else (r.status_code, r.text[:200])

    with ThreadPoolExecutor(4) as pool:
        return [f for f in pool.map(one, range(n)) if f]


def _pids_that_analysed(*servers):
    pids = set()
    for srv in servers:
        pids |= set(re.findall(r"pid=<?(\d+)>? POST /api/v1/analyze", srv.log()))
    return pids


@pytest.mark.slow
def test_three_gunicorn_workers_share_one_cache(tmp_path):
    srv = _start(tmp_path, "three", workers=3, SAEMI_CACHE_DIR=str(tmp_path / "cache"))
    try:
        srv.wait(API + "/ready", timeout=300)
        ids = []
        for seed in range(3):
            r = requests.post(srv.url + API + "/segment", files={"file": (f"{seed}.png", discs_png(256, 256, seed=seed))},
                              timeout=120)
            assert r.status_code == 200, r.text
            ids.append(r.json()["image_id"])
        assert _reanalyse_everywhere([srv], ids) == []
        assert len(_pids_that_analysed(srv)) >= 2, "the re-analyses should have reached several workers"
    finally:
        srv.stop()


@pytest.mark.slow
def test_two_app_processes_share_a_redis(tmp_path, redis_url):
    env = {"SAEMI_REDIS_URL": redis_url}
    a, b = _start(tmp_path, "a", **env), _start(tmp_path, "b", **env)
    try:
        a.wait(API + "/ready", timeout=300)
        b.wait(API + "/ready", timeout=300)
        ids = []
        for srv, seed in ((a, 5), (b, 6), (a, 7)):
            r = requests.post(srv.url + API + "/segment", files={"file": ("x.png", discs_png(256, 256, seed=seed))},
                              timeout=120)
            assert r.status_code == 200, r.text
            ids.append(r.json()["image_id"])
        assert _reanalyse_everywhere([a, b], ids) == []
        assert requests.get(b.url + API + "/health", timeout=10).json()["cached_images"] >= 3
    finally:
        a.stop()
        b.stop()


@pytest.mark.slow
def test_byte_bound_holds_under_30_uploads_of_12_megapixels(tmp_path):
    """The cache folder stays under SAEMI_CACHE_BYTES and the worker under its memory budget."""
    from saemi.budget import DEFAULT_MEMORY_MB

    limit = 64 * 2**20
    cache = tmp_path / "cache"
    srv = _start(tmp_path, "big", SAEMI_CACHE_DIR=str(cache), SAEMI_CACHE_BYTES=str(limit),
                 OMP_NUM_THREADS="2")
    try:
        srv.wait(API + "/ready", timeout=300)
        (worker,) = srv.worker_pids()
        idle = rss_kb(worker) * 1024
        sizes, peaks = [], []
        for k in range(30):
            data = twelve_megapixels(k)
            r = requests.post(srv.url + API + "/segment", files={"file": (f"{k}.png", data)}, timeout=300)
            assert r.status_code == 200, r.text
            sizes.append(sum(p.stat().st_size for p in cache.glob("*.rec")))
            peaks.append(rss_kb(worker, "VmHWM") * 1024)
        assert max(sizes) <= limit, sizes
        assert max(peaks) <= idle + DEFAULT_MEMORY_MB * 2**20, (idle, peaks)
        figures = {"uploads": len(sizes), "cache_limit_mb": limit / 2**20, "cache_max_mb": max(sizes) / 2**20,
                   "worker_rss_idle_mb": idle / 2**20, "worker_rss_peak_mb": max(peaks) / 2**20,
                   "budget_mb": DEFAULT_MEMORY_MB}
        (REPO / "test-output").mkdir(exist_ok=True)
        (REPO / "test-output" / "cache-12mp.json").write_text(json.dumps(figures, indent=1))
        print(figures)
    finally:
        srv.stop()


def test_a_segmentation_is_reused_only_for_the_same_model(tmp_path, random_segmenter):
    """The store outlives processes and may be shared: other weights or card mean another pass."""
    from saemi.service import AnalysisService

    calls = []

    class Counting:
        def __init__(self, card):
            self.card, self.device = card, random_segmenter.device

        def predict(self, image):
            calls.append(self.card["input_scale"])
            return random_segmenter.predict(image)

    store = DiskStore(tmp_path, 10**7, 3600)
    data = discs_png(120, 160)
    AnalysisService(lambda: Counting({**random_segmenter.card, "input_scale": 0.5}), store=store).segment(data)
    AnalysisService(lambda: Counting({**random_segmenter.card, "input_scale": 0.5}), store=store).segment(data)
    assert calls == [0.5]
    AnalysisService(lambda: Counting({**random_segmenter.card, "input_scale": 1.0}), store=store).segment(data)
    assert calls == [0.5, 1.0]
