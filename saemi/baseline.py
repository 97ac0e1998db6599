"""The textbook baseline SAEMI is compared against: Otsu threshold + watershed.

:class:`OtsuSegmenter` has the same ``predict`` interface as the network's
:class:`saemi.model.Segmenter`, so the whole pipeline (banner removal,
splitting, measurements, evaluation) runs unchanged on top of it.
"""

import numpy as np
from skimage.filters import threshold_otsu


class OtsuSegmenter:
    """Particles = the minority side of a global Otsu threshold of the grey image."""

    card = {"classes": ["background", "particle"], "postprocess": {"watershed": True, "threshold": 0.5,
                                                                   "min_distance": 7, "min_size": 20}}
    device = "cpu"

    def predict(self, image, deadline=None):
        """Two-class 'probabilities' (0 or 1), shape (2, H, W), float32.

        ``deadline`` is accepted as the network's is; one threshold has no
        stage to stop before.
        """
        grey = image.mean(axis=2)
        mask = grey > threshold_otsu(grey)
        if mask.mean() > 0.5:  # particles are usually the smaller phase
            mask = ~mask
        fg = mask.astype(np.float32)
        return np.stack([1.0 - fg, fg])
