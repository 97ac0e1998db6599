"""Deployment: the Procfile, gunicorn config, Docker files, and smoke tests of the real thing.

* Static checks of Procfile, gunicorn.conf.py, .python-version, Dockerfile and
  docker-compose.yml (Docker cannot run on the development machine, so the key
  facts are parsed and checked instead of built).
* Smoke test 1: the app started exactly as the Procfile says (``bash -c`` with
  ``$PORT``), waited on ``/api/v1/health``; ``/`` loads; an image is analysed.
* Smoke test 2: the split GPU-server layout on one machine: a backend gunicorn
  (``saemi.api:create_app()``) and a front-end gunicorn (``app:server`` with
  ``SAEMI_BACKEND_URL``); an image goes through the page's own Dash callbacks,
  whose remote client calls the backend over HTTP.
"""

import base64
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import requests
import yaml

from livesrv import REPO, Server, free_port, gunicorn_command, procfile_command, start_backend, weights_available
from samples import real_image

IMAGE = real_image("aa309f6cec")  # 512 x 512; committed in tests/fixtures/emps when ../shared is absent


# --- static checks ---------------------------------------------------------------------------------

def test_procfile_runs_gunicorn_app_server_on_port():
    cmd = shlex.split(procfile_command("web"))
    assert cmd[:2] == ["gunicorn", "app:server"]
    assert "0.0.0.0:$PORT" in cmd, "Heroku routes to $PORT on all interfaces"
    assert cmd[cmd.index("--config") + 1] == "gunicorn.conf.py"


def _gunicorn_settings(env):
    """Settings gunicorn.conf.py yields under ``env`` (evaluated in a clean subprocess)."""
    code = ("import json, runpy; ns = runpy.run_path('gunicorn.conf.py'); "
            "print(json.dumps({k: ns[k] for k in ('bind', 'workers', 'threads', 'worker_class', 'timeout', "
            "'preload_app')} | {'omp': __import__('os').environ['OMP_NUM_THREADS']}))")
    clean = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST", "WEB_CONCURRENCY", "SAEMI_THREADS",
                                                              "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_gunicorn_conf_reads_port_and_web_concurrency():
    s = _gunicorn_settings({"PORT": "5123", "WEB_CONCURRENCY": "3", "SAEMI_THREADS": "6"})
    assert s["bind"] == ["0.0.0.0:5123"] and s["workers"] == 3 and s["threads"] == 6
    # gthread with requests buffered in the event loop, so a slow client holds no thread
    assert s["worker_class"] == "saemi.api.worker.BufferingThreadWorker" and s["preload_app"] is False
    assert s["timeout"] >= 60
    d = _gunicorn_settings({})
    assert d["bind"] == ["127.0.0.1:8050"] and d["workers"] == 1
    assert int(d["omp"]) >= 1


@pytest.mark.slow
def test_gunicorn_config_is_accepted_by_gunicorn():
    gunicorn = str(REPO / ".venv" / "bin" / "gunicorn") if (REPO / ".venv/bin/gunicorn").exists() else "gunicorn"
    env = {**os.environ, "SAEMI_LOAD": "lazy"}
    r = subprocess.run([gunicorn, "-c", "gunicorn.conf.py", "--check-config", "saemi.api:create_app()"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_python_version_file():
    version = (REPO / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version), "Heroku wants a major.minor version like 3.11"
    docker = (REPO / "Dockerfile").read_text()
    assert f"python:{version}-" in docker, "the front-end image uses the same Python as Heroku"


def _dockerfile_stages():
    """{stage name: {"from": image, "lines": [instruction lines]}} with continuations joined."""
    text = (REPO / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            logical.append(buf.strip())
            buf = ""
    stages, current = {}, None
    for line in logical:
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
        if m:
            image = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g.group(1), g.group(0)), m.group(1))
            current = stages.setdefault(m.group(2), {"from": image, "lines": []})
        elif current is not None:
            current["lines"].append(line)
    return stages


def test_dockerfile_backend_on_cuda_and_frontend_targets():
    stages = _dockerfile_stages()
    assert {"backend", "frontend", "web"} <= set(stages)
    assert re.match(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-", stages["backend"]["from"])
    for name, stage in stages.items():
        lines = stage["lines"]
        cmd = [json.loads(l[4:]) for l in lines if l.startswith("CMD ")][-1]
        assert cmd[:3] == ["gunicorn", "-c", "gunicorn.conf.py"], name
        assert any(l.startswith("HEALTHCHECK ") for l in lines), name
        assert any(l.startswith("USER ") and "root" not in l for l in lines), f"{name} must not run as root"
        # everything COPY'd exists in the repository
        for l in lines:
            if l.startswith("COPY ") and "--from" not in l:
                for src in shlex.split(l)[1:-1]:
                    assert list(REPO.glob(src.rstrip("/"))), f"{name}: COPY {src} but it is not in the repository"
    backend = stages["backend"]["lines"]
    assert [json.loads(l[4:]) for l in backend if l.startswith("CMD ")][-1][-1] == "saemi.api:create_app()"
    assert any("/api/v1/ready" in l for l in backend if l.startswith("HEALTHCHECK"))
    assert any("saemi/model_weights/" in l for l in backend if l.startswith("COPY"))
    frontend = " ".join(stages["frontend"]["lines"])
    assert "SAEMI_BACKEND_URL" in frontend
    # the page needs no torch at all: the core less the network, the web extra, pinned by the lock
    runs = " ".join(l for l in stages["frontend"]["lines"] if l.startswith("RUN "))
    assert "frontend_requirements.py" in runs and "-c requirements.txt" in runs
    assert "torch" not in runs and "-r requirements.txt" not in runs, "the front end installs no torch"
    assert not any("model_weights" in l for l in stages["frontend"]["lines"]), "nor ships the weights"
    # each stage copies every part of the package (a new subpackage must be added to the Dockerfile)
    parts = {"saemi/*.py"} | {f"saemi/{p.parent.name}/" for p in (REPO / "saemi").glob("*/__init__.py")}
    for name in ("backend", "frontend"):
        copied = {src for l in stages[name]["lines"] if l.startswith("COPY ") for src in shlex.split(l)[1:-1]}
        assert parts <= copied, f"{name} does not copy {sorted(parts - copied)}"
    web = " ".join(stages["web"]["lines"])
    assert "-r requirements-serve.txt" in web and "-r requirements.txt" not in web, \
        "the one-process CPU image runs the CPU engine: the serving set, no torch"
    assert "saemi/graphs/" in web and "saemi.engine --build" in web, "the export is built at install"


@pytest.mark.slow
def test_frontend_requirements_cover_what_the_remote_page_imports():
    """The torch-free front-end install (deploy/frontend_requirements.py, the Dockerfile's frontend
    target) holds every distribution the page imports with SAEMI_BACKEND_URL set, and no torch."""
    import importlib.metadata as md
    import runpy

    from packaging.requirements import Requirement

    tool = runpy.run_path(str(REPO / "deploy" / "frontend_requirements.py"))
    wanted = {tool["name_of"](r) for r in tool["frontend_requirements"]()}
    assert not wanted & {"torch", "torchvision", "fastai"}
    probe = ("import json, sys; before = set(sys.modules); import app, requests  # requests: the remote client's\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SAEMI_BACKEND_URL": "http://127.0.0.1:9", "SAEMI_LOAD": "lazy"})
    assert out.returncode == 0, out.stderr[-3000:]
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    assert not modules & {"torch", "torchvision", "fastai"}, "the page alone must not import the network"

    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    closure, todo = set(), [norm(n) for n in wanted]
    while todo:  # what installing the list brings in (the installed packages' own requirements)
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(norm(r.name))
    dists = md.packages_distributions()
    missing = {m: dists[m] for m in sorted(modules) if m in dists
               and "saemi" not in dists[m] and not any(norm(d) in closure for d in dists[m])}
    assert not missing, f"the front end imports modules whose distributions it does not install: {missing}"


def test_compose_wires_gpu_backend_and_frontend():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    stages = _dockerfile_stages()
    backend, frontend = compose["services"]["backend"], compose["services"]["frontend"]
    assert backend["build"]["target"] in stages and frontend["build"]["target"] in stages
    devices = backend["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    port = backend["environment"]["PORT"]
    assert frontend["environment"]["SAEMI_BACKEND_URL"] == f"http://backend:{port}"
    assert frontend["depends_on"]["backend"]["condition"] == "service_healthy"
    assert "/api/v1/ready" in " ".join(backend["healthcheck"]["test"])
    assert f":{port}/" in " ".join(backend["healthcheck"]["test"])
    assert frontend["healthcheck"]["test"] and backend["healthcheck"]["start_period"]


def test_compose_puts_a_buffering_proxy_in_front():
    """The GPU-server recipe's one public port is nginx, buffering requests and timing out stalls."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    proxy, frontend = compose["services"]["proxy"], compose["services"]["frontend"]
    assert proxy["image"].startswith("nginx:")
    mount = next(v for v in proxy["volumes"] if v.endswith(":/etc/nginx/nginx.conf:ro"))
    conf = (REPO / mount.split(":")[0]).read_text()
    for directive in ("proxy_request_buffering on", "client_header_timeout", "client_body_timeout",
                      "client_max_body_size 70m", "server_tokens off", "proxy_pass http://saemi_backend",
                      "proxy_pass http://saemi_frontend", "server frontend:8050", "server backend:8000"):
        assert directive in conf, directive
    assert "ports" not in frontend, "the page is reached through the proxy only"
    assert proxy["depends_on"]["frontend"]["condition"] == "service_healthy"


def test_heroku_yml_builds_the_cpu_web_target():
    heroku = yaml.safe_load((REPO / "heroku.yml").read_text())
    stages = _dockerfile_stages()
    target = heroku["build"]["docker"]["web"]["target"]
    assert stages[target]["from"] == "frontend", "CPU-only wheels, no CUDA base"
    web = " ".join(stages[target]["lines"])
    assert "model_weights/" in web and 'SAEMI_BACKEND_URL=""' in web, "the one-process layout needs the weights"
    run = shlex.split(heroku["run"]["web"])
    assert run[0] == "gunicorn" and run[-1] == "app:server" and "gunicorn.conf.py" in run


def test_deploy_doc_lists_every_setting():
    from saemi.api.config import SETTINGS

    doc = (REPO / "docs" / "deploy.md").read_text()
    conf = (REPO / "saemi" / "gunicorn_conf.py").read_text()
    names = set(SETTINGS) | set(re.findall(r'"([A-Z][A-Z0-9]*_[A-Z0-9_]+|PORT|HOST)"', conf))
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"docs/deploy.md does not document {missing}"


def test_saemi_serve_builds_the_gunicorn_commands():
    from saemi.launch import gunicorn_command as serve_cmd

    backend = serve_cmd("backend", "0.0.0.0", 8000, workers=2)
    assert backend[-1] == "saemi.api:create_app()" and "0.0.0.0:8000" in backend
    assert backend[backend.index("--workers") + 1] == "2"
    # the config and the app ship in the package, so an installed saemi serves without a checkout
    assert backend[backend.index("-c") + 1] == str(REPO / "saemi" / "gunicorn_conf.py")
    assert serve_cmd("frontend")[-1] == serve_cmd("all")[-1] == "saemi.wsgi:server"
    with pytest.raises(ValueError):
        serve_cmd("sideways")


# --- smoke tests: real gunicorn on loopback --------------------------------------------------------

def _need_runtime():
    # a missing entry point or test image is a failure, never a skip
    assert (REPO / "app.py").exists(), "app.py (the Procfile's entry point, gunicorn app:server) is missing"
    assert IMAGE.exists(), IMAGE
    if not weights_available():
        pytest.fail("model weights missing (saemi/model_weights/saemi_unet_resnet18.pt or $SAEMI_WEIGHTS)")


@pytest.mark.slow
def test_procfile_smoke(tmp_path):
    """Start the app exactly as the Procfile says; health, the page, and an analysis."""
    _need_runtime()
    srv = Server(procfile_command("web"), env={"WEB_CONCURRENCY": "1", "SAEMI_THREADS": "2",
                                               "SAEMI_CACHE_DIR": str(tmp_path / "cache")},
                 log_path=tmp_path / "procfile.log")
    try:
        srv.wait("/api/v1/health", timeout=240)
        page = requests.get(srv.url + "/", timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        assert "_dash-renderer" in page.text or "dash" in page.text.lower()
        r = requests.post(srv.url + "/api/v1/analyze", files={"file": (IMAGE.name, IMAGE.read_bytes())},
                          timeout=180)
        assert r.status_code == 200, r.text[:500]
        out = r.json()
        assert out["width"] == 512 and out["summary"]["count"] == len(out["particles"])
        assert requests.get(srv.url + "/api/v1/ready", timeout=10).status_code == 200
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-3000:]


class DashPage:
    """Calls a running Dash app's callbacks the way its browser page does (``/_dash-update-component``)."""

    def __init__(self, url):
        self.url = url
        deps = requests.get(url + "/_dash-dependencies", timeout=30)
        assert deps.status_code == 200, deps.text[:300]
        self.callbacks = deps.json()

    def find(self, input_id, input_prop):
        for cb in self.callbacks:
            if any(i["id"] == input_id and i["property"] == input_prop for i in cb["inputs"]):
                return cb
        raise KeyError(f"no callback on {input_id}.{input_prop}")

    def fire(self, cb, values, changed):
        """Run callback ``cb`` with ``values`` ({"id.prop": value}) after ``changed`` ("id.prop")."""
        def outputs(spec):
            parts = spec[2:-2].split("...") if spec.startswith("..") else [spec]
            out = []
            for p in parts:
                cid, prop = p.rsplit(".", 1)
                out.append({"id": cid, "property": prop.split("@")[0]})
            return out

        def items(deps):
            return [{"id": d["id"], "property": d["property"], "value": values.get(f"{d['id']}.{d['property']}")}
                    for d in deps]

        outs = outputs(cb["output"])
        body = {"output": cb["output"], "outputs": outs if len(outs) > 1 else outs[0],
                "inputs": items(cb["inputs"]), "state": items(cb["state"]), "changedPropIds": [changed]}
        r = requests.post(self.url + "/_dash-update-component", json=body, timeout=240)
        assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
        return r.json()["response"]


@pytest.mark.slow
def test_split_backend_and_frontend(tmp_path):
    """Backend and front end as two gunicorns; an upload analysed through the page's callbacks."""
    _need_runtime()
    backend = start_backend(env={"SAEMI_DEVICE": "cpu", "SAEMI_CACHE_DIR": str(tmp_path / "cache")}, threads=2, log_path=tmp_path / "backend.log")
    port = free_port()
    frontend = None
    try:
        backend.wait("/api/v1/ready", timeout=240)
        frontend = Server(gunicorn_command("app:server", threads=2, port=port), port=port,
                          env={"SAEMI_BACKEND_URL": backend.url, "SAEMI_LOAD": "lazy"},
                          log_path=tmp_path / "frontend.log")
        frontend.wait("/", timeout=120)
        # the front end is a bare page: no API of its own (Dash's catch-all answers with the page)
        r = requests.get(frontend.url + "/api/v1/health", timeout=10)
        assert "application/json" not in r.headers.get("Content-Type", "")
        before = requests.get(backend.url + "/api/v1/health", timeout=10).json()["cached_images"]

        page = DashPage(frontend.url)
        contents = "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
        up = page.find("upload", "contents")
        resp = page.fire(up, {"upload.contents": contents, "upload.filename": IMAGE.name,
                              "demo-button.n_clicks": 0, "opacity.value": 0.9},
                         "upload.contents")
        assert not resp.get("upload-error", {}).get("children"), resp.get("upload-error")
        image = resp["image-store"]["data"]
        assert image["image_id"] and image["width"] == 512

        analyse = page.find("image-store", "data")
        values = {"image-store.data": image, "watershed.value": ["on"], "min-distance.value": 7,
                  "threshold.value": 0.5, "min-size.value": 20, "exclude-edge.value": []}
        resp = page.fire(analyse, values, "image-store.data")
        assert not resp.get("analysis-error", {}).get("children"), resp.get("analysis-error")
        assert "particle" in resp["analysis-status"]["children"]
        analysis = resp["analysis-store"]["data"]
        assert analysis["image_id"] == image["image_id"]

        # the work happened on the backend: its cache holds the image the page uploaded
        after = requests.get(backend.url + "/api/v1/health", timeout=10).json()["cached_images"]
        assert after == before + 1
        assert "POST /api/v1/segment" in backend.log() and "POST /api/v1/analyze" in backend.log()
    finally:
        if frontend is not None:
            frontend.stop()
        backend.stop()
    for srv in (backend, frontend):
        assert "Traceback" not in srv.log(), srv.log()[-3000:]


def _pins(path):
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_serving_requirements_are_the_lock_less_torch():
    """requirements-serve.txt (the torch-free server, the Heroku slug): the lock's pins, the package's
    core and web extra, and none of torch, torchvision, fastai or the test tools."""
    import tomllib

    lock, serve = _pins(REPO / "requirements.txt"), _pins(REPO / "requirements-serve.txt")
    assert all(lock.get(name) == version for name, version in serve.items()), \
        {n: (v, lock.get(n)) for n, v in serve.items() if lock.get(n) != v}
    assert not {"torch", "torchvision", "fastai", "pytest", "playwright"} & set(serve)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    wanted = {name.match(r).group(0).lower() for r in project["dependencies"] + project["optional-dependencies"]["web"]}
    assert wanted - {"werkzeug"} <= set(serve), sorted(wanted - set(serve))  # werkzeug comes pinned by flask
    assert not {"torch", "torchvision", "fastai"} & {name.match(r).group(0).lower() for r in project["dependencies"]}
