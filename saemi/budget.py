"""What one analysis may cost: peak memory per pixel, and a deadline checked between stages.

Memory
------
The peak resident memory of one analysis grows linearly with the image's pixel
count: the decoded image, the cleaned copy, the network's activations per tile,
the float32 probability stack at full resolution, the distance map and the
watershed's working arrays. :data:`BYTES_PER_PIXEL` is that slope, measured with
``python bench/bench_memory.py`` (peak RSS of a process that has loaded the model,
analysing synthetic micrographs of 1 to 16 megapixels, least-squares fit). A
worker with a memory budget of ``M`` MB beside its model accepts images of up to
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

#: Peak extra resident memory of one analysis, bytes per image pixel (measured; see above).
BYTES_PER_PIXEL = 70
#: Memory budget of one analysis by default, MB (beside the ~0.6 GB loaded model):
#: a 2.5 GB Heroku performance-m dyno or a 4 GB container with one worker.
DEFAULT_MEMORY_MB = 1536.0
#: No budget raises the pixel limit above this: beyond it decoding itself is the risk.
MAX_PIXELS_CAP = 50_000_000


def pixels_for_memory(memory_mb, bytes_per_pixel=BYTES_PER_PIXEL):
    """The largest image (pixels) whose analysis fits a memory budget.

    Parameters
    ----------
    memory_mb : float
        Budget for one analysis in MB (2**20 bytes), beside the loaded model.
    bytes_per_pixel : float

    Returns
    -------
    int
        At most :data:`MAX_PIXELS_CAP`.

    Examples
    --------
    >>> pixels_for_memory(700, 70)
    10485760
    """
    return int(min(MAX_PIXELS_CAP, memory_mb * 2**20 // bytes_per_pixel))


class Deadline:
    """A point in time after which an analysis gives up.

    Parameters
    ----------
    seconds : float or None
        Time allowed from now; None never expires.

    Examples
    --------
    >>> Deadline(None).check("network")
    >>> Deadline(-1).expired
    True
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + float(seconds)

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
        if self.expired:
            raise SaemiError(f"the analysis took longer than this server's limit of {self.seconds:g} s "
                             f"(stopped before {stage}); try a smaller image, or ask the administrator "
                             "to raise SAEMI_TIMEOUT", code="timeout")


def check(deadline, stage):
    """:meth:`Deadline.check` that accepts None (no deadline)."""
    if deadline is not None:
        deadline.check(stage)
