"""Makes sure the profile's dataset exists on disk and returns its directory.

Called by the runners before they build the pipeline: the synthetic profile generates its
data (idempotently), the flickr8k profiles read an existing copy or download the release.
"""

from __future__ import annotations

import logging
from pathlib import Path

from configs import Config
from data import download, layout, synthetic

log = logging.getLogger(__name__)


# The two ways out, named whenever the data is neither here nor downloadable.
WAYS_OUT = (
    "point CAPTIONER_DATA_DIR at a copy in the release layout "
    "(CAPTIONER_DATA_DIR=/path/to/flickr8k make pipeline), "
    "or take a first look on synthetic data (make demo)"
)


class DatasetMissingError(FileNotFoundError):
    """The data directory does not hold the dataset and it cannot be downloaded."""


def ensure_dataset(config: Config) -> Path:
    """The data directory of `config`, generated or downloaded first when needed."""
    data_dir = config.data_dir
    if config.data.source == "synthetic":
        spec = config.data.synthetic
        synthetic.generate_dataset(data_dir, spec)
        return data_dir
    if layout.looks_like_flickr8k_layout(data_dir):
        return data_dir
    missing = f"{data_dir} does not hold Flickr8k (it needs Flicker8k_Dataset/ and Flickr8k.token.txt)"
    if not config.data.download:
        raise DatasetMissingError(f"{missing}; {WAYS_OUT}, or set data.download: true to fetch the release")
    log.info(
        "Flickr8k not found in %s: downloading the release archives (%s, resumable), "
        "then the whole pipeline runs on it (see the README for its time)",
        data_dir,
        download.RELEASE_SIZE,
    )
    try:
        return download.prepare_flickr8k(data_dir)
    except download.DownloadError as e:
        raise DatasetMissingError(f"{missing} and the download failed: {e}. To go on, {WAYS_OUT}") from e
