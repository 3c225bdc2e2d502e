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


class DatasetMissingError(FileNotFoundError):
    """The data directory does not hold the dataset and downloading is off."""


def ensure_dataset(config: Config) -> Path:
    """The data directory of `config`, generated or downloaded first when needed."""
    data_dir = config.data_dir
    if config.data.source == "synthetic":
        spec = config.data.synthetic
        synthetic.generate_dataset(data_dir, spec)
        return data_dir
    if layout.looks_like_flickr8k_layout(data_dir):
        return data_dir
    if not config.data.download:
        raise DatasetMissingError(
            f"{data_dir} does not hold Flickr8k (it needs Flicker8k_Dataset/ and "
            "Flickr8k.token.txt); set CAPTIONER_DATA_DIR to a copy in the release layout, "
            "or set data.download: true to fetch the release archives"
        )
    log.info("Flickr8k not found in %s: downloading the release archives", data_dir)
    return download.prepare_flickr8k(data_dir)
