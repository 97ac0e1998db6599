"""Batch analysis on a Dask cluster: ``saemi analyze --scheduler ADDR`` or ``--workers N``.

Only where the computation happens changes; what a run writes does not. The
``saemi analyze`` process (the *client*) does everything a serial run does
except the analysis itself:

* it collects the inputs, plans and checks every output path, and refuses
  (exit 2) exactly as a serial run does, before any image is sent;
* it reads each image's bytes itself (workers need not share a filesystem
  with the client) and submits one task per image, keeping at most
  :data:`IN_FLIGHT_PER_THREAD` tasks per worker thread in flight, so a
  5,000-image run never holds more than a few images in memory;
* it writes each image's three files (atomically, as a serial run does) as
  its result arrives, with a progress bar over completed images, and
  ``summary.csv`` at the end, its rows in input order.

What a worker does (:func:`analyse_image`): run :func:`saemi.pipeline.analyze`
on the bytes with the client's settings, draw the overlay and encode the
three files (``_labels.png``, ``_particles.csv``, ``_overlay.png``) with the
same functions a serial run uses, and return those bytes plus the image's
``summary.csv`` row. So the files are byte for byte the ones a serial run
writes. Encoding on the worker was chosen by measuring (saemi/ui/assets/demo.png,
630x512, one CPU core): the encoded files are 326 kB (labels PNG 18 kB,
overlay PNG 294 kB, CSV 13 kB) against 645 kB for the raw uint16 label array
alone, and drawing plus encoding the overlay costs 0.13 s, which on the
client would cap one client at about 7 images/s however many workers there
are; on the workers it spreads with them.

The model is loaded once per worker process: :class:`ModelPlugin` loads it
when the run starts (and on every worker that joins or is restarted later),
and the task itself goes through :func:`saemi.pipeline.default_segmenter`,
an ``lru_cache`` per process, so a task never loads it again. A later run on
the same cluster with the same weights finds the model already loaded.

Failures:

* A bad image (not an image, too large, blank, any exception of the
  analysis) is not an exception of the task: the task returns it as an
  ``error`` row, exactly the row a serial run writes, and it is not retried
  (every such failure is deterministic).
* A worker that dies mid-task (killed, out of memory) loses nothing: the
  scheduler gives its tasks to another worker (the nanny restarts the dead
  one). An image on which workers die ``distributed.scheduler.allowed-failures
  + 1`` times (3 + 1 by default) is given up as an ``error`` row
  (:class:`distributed.KilledWorker`) and the batch goes on. Client-side
  ``retries`` are not used: they only re-run tasks that raise, and these
  tasks do not raise.
* An unreachable scheduler, a cluster without workers, or workers that
  cannot load the model stop the run before anything is written (exit 2).

The post-processing defaults (the model card's tuned splitting settings)
come from the card of the weights the *workers* load, so a thin client
without the weights still uses the settings that belong to them; workers
whose cards differ refuse the run.
"""

import asyncio
import dataclasses
import logging
import os
import sys
import uuid
import warnings
from pathlib import Path

#: Tasks kept in flight per worker thread: enough that a worker never waits
#: for the client between images, few enough to bound the client's memory.
IN_FLIGHT_PER_THREAD = 2
#: How long to wait for the first worker of a ``--scheduler`` cluster.
WAIT_FOR_WORKERS_S = 60
PLUGIN_NAME = "saemi-model"


def cpu_count():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _set_torch_threads(threads):
    """CPU threads per forward pass: ``OMP_NUM_THREADS``, which the CPU engine (saemi.engine) reads when
    it loads, and torch's own setting if torch is loaded (it is not imported here: a worker on the
    CPU engine never loads it; torch reads ``OMP_NUM_THREADS`` itself when it is imported later)."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _load_model(weights, device, threads):
    from .pipeline import default_segmenter

    _set_torch_threads(threads)
    default_segmenter(weights, device)


try:
    from distributed import WorkerPlugin as _WorkerPluginBase
except ImportError:  # dask is optional: only batch runs on a cluster need it
    _WorkerPluginBase = object


class ModelPlugin(_WorkerPluginBase):
    """Loads the network once in every worker process, at registration and at worker start.

    Parameters
    ----------
    weights : str or None
        A weights file or folder *on the workers*; None: the worker's
        ``$SAEMI_WEIGHTS`` or its bundled weights.
    device : {'auto', 'cpu', 'cuda'}
    threads : int or None
        CPU threads per forward pass in each worker (engine or PyTorch); None leaves the worker's setting
        (under ``dask worker`` that is ``OMP_NUM_THREADS``, which Dask's nanny
        sets to 1 unless configured otherwise).
    """

    name = PLUGIN_NAME

    def __init__(self, weights=None, device="auto", threads=None):
        self.weights, self.device, self.threads = weights, device, threads

    async def setup(self, worker):
        # off the worker's event loop, so that it keeps answering heartbeats while torch loads
        await asyncio.get_running_loop().run_in_executor(None, _load_model, self.weights, self.device,
                                                         self.threads)


def worker_card(weights=None):
    """The model card of the weights a worker loads (run on each worker)."""
    from .card import read_card

    card = read_card(weights)
    return {"postprocess": card.get("postprocess", {}), "weights": str(weights or "(the worker's default)")}


def analyse_image(data, file, settings, weights=None, device="auto", overlay_mode="outline", threads=None):
    """The task run on a worker: one image's output files and its ``summary.csv`` row.

    Parameters
    ----------
    data : bytes
        The image file's contents, as the client read them.
    file : str
        The input's path on the client (only for the row's ``file`` column).
    settings : dict
        :class:`saemi.pipeline.Settings` as a dict, complete.
    weights, device, threads
        As for :class:`ModelPlugin`.
    overlay_mode : {'outline', 'filled'}

    Returns
    -------
    dict
        ``row``: the summary row (:func:`saemi.cli.summary_row`); ``files``:
        ``{kind: bytes}`` per ``saemi.cli.OUTPUT_KINDS``, or None when the
        analysis failed (the row then has status ``error``). Never raises for
        a bad image.
    """
    from .cli import describe_error, encode_outputs, summary_row

    try:
        from .pipeline import Settings, analyze, default_segmenter

        _set_torch_threads(threads)
        # the name, not the path: the suffix picks the reader; sidecar files stay on the client
        a = analyze(data, Settings.from_dict(settings), default_segmenter(weights, device),
                    filename=Path(str(file)).name)
        return {"row": summary_row(file, "ok", analysis=a), "files": encode_outputs(a, overlay_mode)}
    except Exception as exc:  # a failed image is a row, as in a serial run
        return {"row": summary_row(file, "error", describe_error(exc)), "files": None}


class Cluster:
    """A connection to the cluster a batch runs on; a context manager that closes it.

    Use :func:`connect`.

    Attributes
    ----------
    client : distributed.Client
    card : dict
        :func:`worker_card` of the workers (all the same).
    threads : int or None
        PyTorch threads per worker (set for a local cluster).
    """

    def __init__(self, client, local=None, threads=None, weights=None, device="auto"):
        self.client, self.local, self.threads = client, local, threads
        self.weights, self.device = weights, device
        self.card = None

    def worker_threads(self):
        """Worker threads in the cluster now (at least 1)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:
            return 1

    def close(self):
        try:
            if self.local is None:  # leave a shared cluster as it was found (loaded models stay cached)
                self.client.unregister_worker_plugin(PLUGIN_NAME)
        except Exception:
            pass
        for thing in (self.client, self.local):
            try:
                if thing is not None:
                    thing.close()
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(scheduler=None, workers=None, weights=None, device="auto"):
    """Connect to a scheduler, or start a local cluster; load the model on every worker.

    Parameters
    ----------
    scheduler : str, optional
        ``tcp://HOST:8786``: an existing cluster.
    workers : int, optional
        Without ``scheduler``: start a ``LocalCluster`` of this many worker
        processes with one thread each, and ``max(1, cores // workers)``
        PyTorch threads per worker, closed with the run.
    weights, device
        As for :class:`ModelPlugin`.

    Returns
    -------
    Cluster

    Raises
    ------
    SaemiError
        Dask missing, the scheduler unreachable, no worker within
        :data:`WAIT_FOR_WORKERS_S`, the model not loadable on a worker, or
        workers with different model cards.
    """
    from .errors import SaemiError

    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise SaemiError(f"--scheduler and --workers need dask and distributed installed ({exc})",
                         code="bad_parameter") from exc
    local, threads = None, None
    if scheduler:
        try:
            client = Client(scheduler, set_as_default=False)
        except Exception as exc:
            raise SaemiError(f"cannot reach the Dask scheduler at {scheduler}: {type(exc).__name__}: {exc}",
                             code="bad_parameter") from None
    else:
        threads = max(1, cpu_count() // workers)
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        try:
            with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in env.items()}):
                local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None, silence_logs=logging.CRITICAL)
            client = Client(local, set_as_default=False)
        except Exception as exc:
            if local is not None:
                local.close()
            raise SaemiError(f"could not start {workers} local Dask workers: {type(exc).__name__}: {exc}",
                             code="bad_parameter") from None
    cluster = Cluster(client, local, threads, weights, device)
    try:
        try:
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except Exception:
            raise SaemiError(f"no Dask worker joined the scheduler at {scheduler} within {WAIT_FOR_WORKERS_S} s; "
                             f"start workers with 'dask worker {scheduler} --nthreads 1'",
                             code="bad_parameter") from None
        try:
            client.register_plugin(ModelPlugin(weights, device, threads), name=PLUGIN_NAME)
            cards = client.run(worker_card, weights)
        except Exception as exc:
            raise SaemiError(f"the Dask workers could not load the model: {_describe(exc)}",
                             code="no_model") from None
        kinds = {repr(sorted(c["postprocess"].items())) for c in cards.values()}
        if len(kinds) > 1:
            raise SaemiError("the Dask workers hold different model weights (their model cards differ); "
                             "give every worker the same weights", code="no_model")
        cluster.card = next(iter(cards.values()))
    except BaseException:
        cluster.close()
        raise
    return cluster


def _describe(exc):
    from .cli import describe_error

    if isinstance(exc, ModuleNotFoundError):
        return f"{exc} (install saemi in the workers' environment, or set PYTHONPATH for 'dask worker')"
    return describe_error(exc)


def _task_error(exc):
    """The ``error`` cell of an image whose task failed outside the analysis."""
    try:
        from distributed import KilledWorker
    except ImportError:  # pragma: no cover
        KilledWorker = ()
    if isinstance(exc, KilledWorker):
        return ("the Dask workers analysing it died repeatedly (out of memory, or killed); "
                "the image was given up")
    return _describe(exc)


def run_batch(cluster, files, plans, settings, overlay_mode="outline", quiet=False, on_result=None):
    """Analyse ``files`` on the cluster and write each one's outputs as it arrives.

    Parameters
    ----------
    cluster : Cluster
    files : list of Path
    plans : list of dict
        :func:`saemi.cli.plan_outputs`, in the same order.
    settings : saemi.pipeline.Settings
    overlay_mode : str
    quiet : bool
        No progress bar.
    on_result : callable(index, row), optional
        Called after each image's outcome is recorded (tests use it).

    Returns
    -------
    rows : list of dict
        One ``summary.csv`` row per input, in input order; the images not
        done when the run was interrupted have status ``interrupted``.
    failed : int
    interrupted : bool
    """
    from distributed import as_completed
    from tqdm import tqdm

    from .cli import describe_error, read_input, summary_row, write_outputs

    client = cluster.client
    settings_dict = dataclasses.asdict(settings)
    rows = [None] * len(files)
    failed, interrupted = 0, False
    index, todo = {}, iter(range(len(files)))
    pending = as_completed(loop=client.loop)
    run_id = uuid.uuid4().hex[:8]
    bar = tqdm(total=len(files), desc="analysing", unit="image", disable=quiet)

    def record(i, row):
        nonlocal failed
        rows[i] = row
        if row["status"] != "ok":
            failed += 1
            tqdm.write(f"saemi: failed {files[i]}: {row['error']}", file=sys.stderr)
        bar.update(1)
        if on_result is not None:
            on_result(i, row)

    def submit_one():
        """Read the next input and submit it; False when none is left."""
        for i in todo:
            f = files[i]
            try:
                data = read_input(f)
            except Exception as exc:  # unreadable on the client: a row, as in a serial run
                record(i, summary_row(f, "error", describe_error(exc)))
                continue
            with warnings.catch_warnings():  # a large TIFF is one large task; that is expected
                warnings.filterwarnings("ignore", message="Sending large graph")
                future = client.submit(analyse_image, data, str(f), settings_dict, cluster.weights,
                                       cluster.device, overlay_mode, cluster.threads,
                                       key=f"saemi-analyse-{run_id}-{i}", pure=False)
            index[future.key] = i
            pending.add(future)
            return True
        return False

    try:
        for _ in range(IN_FLIGHT_PER_THREAD * cluster.worker_threads()):
            if not submit_one():
                break
        for future in pending:
            i = index.pop(future.key)
            try:
                result = future.result()
            except (Exception, asyncio.CancelledError) as exc:
                record(i, summary_row(files[i], "error", _task_error(exc)))
            else:
                row = result["row"]
                if result["files"] is not None:
                    try:
                        write_outputs(plans[i], result["files"])
                    except Exception as exc:
                        row = summary_row(files[i], "error", describe_error(exc))
                record(i, row)
            future.release()
            limit = IN_FLIGHT_PER_THREAD * cluster.worker_threads()  # workers may come and go
            while pending.count() < limit and submit_one():
                pass
    except KeyboardInterrupt:
        interrupted = True
        try:
            client.cancel(list(pending.futures))
        except Exception:
            pass
        rows = [r if r is not None else summary_row(f, "interrupted", "the run was interrupted before this image "
                                                                      "was done")
                for f, r in zip(files, rows)]
    finally:
        bar.close()
    return rows, failed, interrupted
