"""Background analyses: the job board on a real store, and ``/jobs`` through gunicorn.

The API half runs two gunicorn workers on one disk store, so a status request
may be answered by a worker that is not running the job: progress must come
from the store, not from the worker's memory.
"""

import json
import threading
import time

import pytest
import requests

from livesrv import start_backend, weights_available
from samples import real_image
from saemi.budget import Deadline
from saemi.cache import DiskStore
from saemi.errors import SaemiError
from saemi.jobs import JobBoard, check_job_id, job_status, new_job_id

API = "/api/v1"


def wait_until_ended(board, job_id, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = board.get(job_id)
        if status["status"] not in ("queued", "running"):
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {status['status']} after {timeout} s")


@pytest.fixture
def board(tmp_path):
    return JobBoard(DiskStore(tmp_path, 10**7, 3600), timeout=60)


def test_a_job_reports_its_stages_in_order_and_its_result(board):
    def work(deadline):
        for stage in ("reading the scale bar", "network tile 1 of 2", "network tile 2 of 2",
                      "splitting touching particles"):
            deadline.check(stage)
        return {"count": 7}

    queued = board.submit(work, label="a.png")
    assert queued["status"] == "queued" and queued["label"] == "a.png"
    done = wait_until_ended(board, queued["job_id"])
    assert done["status"] == "done", done
    assert done["result"] == {"count": 7}
    assert [s["stage"] for s in done["stages"]] == ["starting", "reading the scale bar", "network tile 1 of 2",
                                                   "network tile 2 of 2", "splitting touching particles"]
    assert [s["at_s"] for s in done["stages"]] == sorted(s["at_s"] for s in done["stages"])
    assert done["stage"] == "done" and "error" not in done


def test_progress_is_visible_while_the_job_runs(board):
    at_network, release = threading.Event(), threading.Event()

    def work(deadline):
        deadline.check("network tile 3 of 12")
        at_network.set()
        release.wait(10)
        return {}

    job_id = board.submit(work)["job_id"]
    assert at_network.wait(10)
    running = board.get(job_id)
    release.set()
    assert running["status"] == "running" and running["stage"] == "network tile 3 of 12"
    assert wait_until_ended(board, job_id)["status"] == "done"


def test_a_user_error_fails_the_job_with_its_code_and_message(board):
    def work(deadline):
        raise SaemiError("not an image file (the bytes start with 'hello')", code="not_an_image")

    failed = wait_until_ended(board, board.submit(work)["job_id"])
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "not_an_image", "message": "not an image file (the bytes start with 'hello')"}
    assert "result" not in failed


def test_a_bug_fails_only_its_job_and_the_board_goes_on(board):
    failed = wait_until_ended(board, board.submit(lambda d: 1 / 0)["job_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "internal_error"
    assert "ZeroDivisionError" in failed["error"]["message"]
    assert wait_until_ended(board, board.submit(lambda d: {"ok": True})["job_id"])["result"] == {"ok": True}


def test_a_job_past_its_deadline_stops_at_the_next_stage(tmp_path):
    board = JobBoard(DiskStore(tmp_path, 10**7, 3600), timeout=0.05)

    def work(deadline):
        time.sleep(0.2)
        deadline.check("network tile 2 of 12")
        return {}

    failed = wait_until_ended(board, board.submit(work)["job_id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"
    assert "network tile 2 of 12" in failed["error"]["message"]


def test_a_full_worker_refuses_more_jobs_as_busy(tmp_path):
    board = JobBoard(DiskStore(tmp_path, 10**7, 3600), max_running=1, max_queued=1)
    release = threading.Event()
    first = board.submit(lambda d: release.wait(10))
    board.submit(lambda d: {})
    with pytest.raises(SaemiError) as e:
        board.submit(lambda d: {})
    assert e.value.code == "busy"
    release.set()
    wait_until_ended(board, first["job_id"])
    time.sleep(0.1)
    board.submit(lambda d: {})  # room again once the queue drains


def test_a_job_whose_worker_died_is_reported_lost():
    now = 1000.0
    record = {"job_id": new_job_id(), "status": "running", "stage": "network tile 1 of 4", "stages": [],
              "label": "x", "created": now, "started": now, "ended": None, "must_end": now + 60}
    assert job_status(record, now=now + 30)["status"] == "running"
    lost = job_status(record, now=now + 61)
    assert lost["status"] == "lost" and lost["error"]["code"] == "job_lost"


@pytest.mark.parametrize("bad", ["", "job-", "job-xyz", "../../etc/passwd", "job-" + "g" * 24, None, 5,
                                 "seg-" + "0" * 24])
def test_job_ids_that_no_job_could_have_are_not_found(bad):
    with pytest.raises(SaemiError) as e:
        check_job_id(bad)
    assert e.value.code == "not_found"


def test_a_stage_log_is_read_back_by_another_service_on_the_same_store(tmp_path):
    from saemi.service import AnalysisService

    writer = AnalysisService(lambda: None, store=DiskStore(tmp_path, 10**7, 3600))
    reader = AnalysisService(lambda: None, store=DiskStore(tmp_path, 10**7, 3600))
    log = writer.stage_log("tab-0123456789")
    assert reader.progress("tab-0123456789") is None
    log("reading the scale bar")
    log("network tile 1 of 20")
    seen = reader.progress("tab-0123456789")
    assert seen["stage"] == "network tile 1 of 20" and seen["done"] is False and seen["elapsed_s"] >= 0
    log.finish()
    assert reader.progress("tab-0123456789")["done"] is True
    assert writer.stage_log("../../etc") is None and reader.progress("../../etc") is None


def test_the_pages_client_keeps_each_stage_of_an_upload_under_the_tabs_token(tmp_path):
    """The in-process client passes a stage log down the real pipeline, and marks it done at the end."""
    import io

    import numpy as np
    from PIL import Image

    from saemi.baseline import OtsuSegmenter
    from saemi.service import AnalysisService
    from saemi.ui.client import InProcessClient

    heard = []

    class Listening(AnalysisService):
        def stage_log(self, key):
            log = super().stage_log(key)

            def on_stage(stage):
                heard.append(stage)
                log(stage)
            on_stage.finish = log.finish
            return on_stage

    svc = Listening(OtsuSegmenter, store=DiskStore(tmp_path, 10**8, 3600))
    client = InProcessClient(svc)
    img = np.full((200, 300), 30, np.uint8)
    img[50:90, 60:100] = img[120:160, 180:220] = 220
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    info = client.segment(buf.getvalue(), "two.png", progress="tab-0123456789abcdef")
    assert heard[:1] == ["reading the scale bar"] and "the network" in heard
    assert client.progress("tab-0123456789abcdef")["done"] is True
    heard.clear()
    client.analyze(info["image_id"], {"watershed": False}, progress="tab-0123456789abcdef")
    assert "splitting touching particles" in heard and "measuring the particles" in heard
    assert client.progress("tab-0123456789abcdef")["done"] is True
    assert client.progress("tab-never-used-here") is None
    # a new labelling reports its splitting before it starts, and a deadline stops it there
    with pytest.raises(SaemiError) as e:
        svc.analyze(image_id=info["image_id"], settings={"watershed": True, "min_size": 5}, include_images=False,
                    deadline=Deadline(-1))
    assert e.value.code == "timeout" and "splitting touching particles" in str(e.value)


def test_deadline_reports_each_stage_before_checking_time():
    heard = []
    with pytest.raises(SaemiError):
        Deadline(-1, on_stage=heard.append).check("the network")
    assert heard == ["the network"]


# --- through the real server ---------------------------------------------------------------

@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    if not weights_available():
        pytest.fail("model weights missing: the job API tests run the real network")
    srv = start_backend(env={"SAEMI_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "SAEMI_DEVICE": "cpu"},
                        workers=2, threads=2, log_path=tmp_path_factory.mktemp("gunicorn") / "jobs.log")
    try:
        srv.wait(API + "/ready", timeout=300)
        yield srv
    finally:
        srv.stop()


def poll(srv, status_url, timeout=240):
    seen, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        r = requests.get(srv.url + status_url, timeout=30)
        assert r.status_code == 200, r.text
        job = r.json()
        seen.append(job["stage"])
        if job["status"] not in ("queued", "running"):
            return job, seen
        time.sleep(0.05)
    raise AssertionError(f"job not done in {timeout} s; stages seen {seen}")


@pytest.mark.slow
def test_a_job_analyses_a_real_image_and_names_its_stages(two_workers):
    data = real_image("2ee0518d7a").read_bytes()
    r = requests.post(two_workers.url + API + "/jobs", files={"file": ("emps.png", data)},
                      data={"settings": json.dumps({"min_size": 30})}, timeout=60)
    assert r.status_code == 202, r.text
    queued = r.json()
    assert r.headers["Location"] == queued["status_url"] == f"{API}/jobs/{queued['job_id']}"
    job, _ = poll(two_workers, queued["status_url"])
    assert job["status"] == "done", job
    stages = [s["stage"] for s in job["stages"]]
    for expected in ("reading the scale bar", "the network", "splitting touching particles",
                     "measuring the particles"):
        assert expected in stages, stages
    assert any(s.startswith("network tile") for s in stages) or "the network" in stages
    result = job["result"]
    assert result["settings"]["min_size"] == 30 and "overlay_png" not in result
    # the job's analysis is the one /analyze gives for its image_id
    again = requests.post(two_workers.url + API + "/analyze", timeout=60,
                          json={"image_id": result["image_id"], "min_size": 30, "include_images": False}).json()
    assert again["summary"]["count"] == result["summary"]["count"] > 0
    assert len(result["particles"]) == result["summary"]["count"]


@pytest.mark.slow
def test_bad_job_requests_are_refused_at_once_or_fail_with_a_named_error(two_workers):
    base = two_workers.url + API
    for unknown in ("nope-not-an-id", "0123456789abcdef"):
        r = requests.post(base + "/jobs", json={"image_id": unknown}, timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    r = requests.post(base + "/jobs", json={"image": "aGVsbG8=", "min_size": -5}, timeout=30)
    assert r.status_code == 422 and "min_size" in r.json()["error"]["message"]
    r = requests.post(base + "/jobs", files={"file": ("notes.png", b"hello, not an image")}, timeout=30)
    assert r.status_code == 202, r.text
    job, _ = poll(two_workers, r.json()["status_url"])
    assert job["status"] == "failed" and job["error"]["code"] == "not_an_image", job
    for bad in ("job-" + "0" * 24, "../../etc/passwd", "x" * 500):
        r = requests.get(base + "/jobs/" + bad, timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (bad, r.text)


@pytest.mark.slow
def test_the_pages_remote_client_follows_its_upload_by_progress_token(two_workers):
    """The page with $SAEMI_BACKEND_URL: the upload's stages come back through GET /progress/<token>."""
    import io

    import numpy as np
    from PIL import Image

    from saemi.ui.client import RemoteClient

    client = RemoteClient(two_workers.url)
    token = "tab-" + "5a" * 8
    assert client.progress(token) is None  # nothing reported yet: 404 on the wire, None to the page
    # a 2x2 mosaic of a real image: not in the cache (another test uploads the image itself), and
    # a network pass long enough to be seen
    tile = np.asarray(Image.open(real_image("2ee0518d7a")).convert("L"))
    buf = io.BytesIO()
    Image.fromarray(np.block([[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]])).save(buf, "PNG")
    data = buf.getvalue()
    done = {}
    upload = threading.Thread(target=lambda: done.update(info=client.segment(data, "emps.png", progress=token)))
    upload.start()
    seen, end = [], time.monotonic() + 240
    while upload.is_alive() and time.monotonic() < end:
        record = client.progress(token)
        if record:
            seen.append(record["stage"])
        time.sleep(0.05)
    upload.join(timeout=5)
    assert "info" in done, "the upload did not finish"
    stages = set(seen)
    assert stages & {"reading the scale bar", "the network", "removing the data bar"} or any(
        s.startswith("network tile") for s in stages), seen
    assert client.progress(token) == {**client.progress(token), "stage": "done", "done": True}
    # a slider move's re-analysis reports under the same token
    client.analyze(done["info"]["image_id"], {"min_size": 30}, progress=token)
    assert client.progress(token)["done"] is True
    base = two_workers.url + API
    r = requests.post(base + "/analyze", json={"image_id": done["info"]["image_id"], "progress": "../x"}, timeout=30)
    assert r.status_code == 422 and "progress" in r.json()["error"]["message"], r.text
    r = requests.post(base + "/jobs", json={"image_id": done["info"]["image_id"], "progress": token}, timeout=30)
    assert r.status_code == 422 and "progress" in r.json()["error"]["message"], r.text
    for bad in ("never-used-token", "../../etc/passwd"):
        r = requests.get(base + "/progress/" + bad, timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (bad, r.text)
