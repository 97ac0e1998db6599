"""What one analysis may cost: peak memory per pixel, and a deadline checked between stages.

Memory
------
The peak resident memory of one analysis (above a worker that has loaded its
model) is the larger of a fixed part, the network's working memory for one
tile, and a part that grows with the image: the decoded image, the cleaned copy,
the float32 probability stack at full resolution, the distance map and the
watershed's arrays. Measured with ``python bench/bench_memory.py --sizes 1 4 9 16 25``
(2026-12-01, 2 CPU cores, torch 2.15 CUDA wheels on the CPU): 478, 476, 620, 913 and
1413 MB for 1, 4, 9, 16 and 25 megapixels. :func:`analysis_memory_mb` bounds every
point from above; a worker with a budget of ``M`` MB accepts images of up to
:func:`pixels_for_memory` ``(M)`` pixels.

Deadline
--------
A :class:`Deadline` is checked between the stages of an analysis and between the
network's tiles, so an analysis past its time stops within one stage or tile
(each bounded: settings have ranges, images have a pixel limit) and raises
:class:`saemi.errors.SaemiError` with code ``timeout``; the web layers answer 503.
"""

import time

from .errors import SaemiError

#: Growth of the peak with the image, bytes per pixel (the 16-25 MP slope, rounded up).
BYTES_PER_PIXEL = 56
#: Part of the peak that does not grow with the image, MB (the fit's intercept, rounded up) ...
FIXED_MB = 160
#: ... and the network's working memory for one tile, which any image needs, MB.
NETWORK_MB = 480
#: Memory budget of one analysis by default, MB: a 2.5 GB dyno or a 3 GB container holding
#: one worker with its model (0.75 GB on CPU wheels, 1.3 GB on CUDA wheels).
DEFAULT_MEMORY_MB = 1536.0
#: No budget raises the pixel limit above this: beyond it decoding itself is the risk.
MAX_PIXELS_CAP = 50_000_000


def analysis_memory_mb(pixels):
    """Upper bound of one analysis's peak memory above the loaded model, MB.

    Examples
    --------
    >>> round(analysis_memory_mb(1e6)), round(analysis_memory_mb(25e6))
    (480, 1495)
    """
    return max(NETWORK_MB, FIXED_MB + pixels * BYTES_PER_PIXEL / 2**20)


def pixels_for_memory(memory_mb):
    """The largest image (pixels) whose analysis fits a memory budget.

    Parameters
    ----------
    memory_mb : float
        Budget for one analysis in MB (2**20 bytes), beside the loaded model.

    Returns
    -------
    int
        At most :data:`MAX_PIXELS_CAP`.

    Raises
    ------
    ValueError
        For a budget below :data:`NETWORK_MB`: no image can be analysed in it.

    Examples
    --------
    >>> pixels_for_memory(1536)
    25765010
    """
    if memory_mb < NETWORK_MB:
        raise ValueError(f"a memory budget of {memory_mb:g} MB is below the {NETWORK_MB} MB that the network "
                         "needs for any image; raise SAEMI_MEMORY_MB")
    return int(min(MAX_PIXELS_CAP, (memory_mb - FIXED_MB) * 2**20 // BYTES_PER_PIXEL))


class Deadline:
    """A point in time after which an analysis gives up.

    Every stage of an analysis passes through :meth:`check` with its name
    ("reading the scale bar", "network tile 3 of 12", ...), so the deadline is
    also where progress is reported: ``on_stage`` hears each name first.

    Parameters
    ----------
    seconds : float or None
        Time allowed from now; None never expires.
    on_stage : callable, optional
        Called as ``on_stage(stage)`` before each stage (a job's progress).

    Examples
    --------
    >>> Deadline(None).check("network")
    >>> Deadline(-1).expired
    True
    >>> heard = []
    >>> Deadline(None, on_stage=heard.append).check("splitting touching particles")
    >>> heard
    ['splitting touching particles']
    """

    def __init__(self, seconds, on_stage=None):
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + float(seconds)
        self.on_stage = on_stage

    @property
    def expired(self):
        return self.at is not None and time.monotonic() > self.at

    def check(self, stage):
        """Raise :class:`SaemiError` (code ``timeout``) if the deadline has passed.

        Parameters
        ----------
        stage : str
            What was about to run, for the message ("network tile 3 of 12").
        """
        if self.on_stage is not None:
            self.on_stage(stage)
        if self.expired:
            raise SaemiError(f"the analysis took longer than this server's limit of {self.seconds:g} s "
                             f"(stopped before {stage}); try a smaller image, or ask the administrator "
                             "to raise SAEMI_TIMEOUT", code="timeout")


def check(deadline, stage):
    """:meth:`Deadline.check` that accepts None (no deadline)."""
    if deadline is not None:
        deadline.check(stage)
