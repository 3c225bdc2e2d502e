"""CaptionPusher: blessed models only, into TF Serving's `<base_dir>/<version>/`, atomically."""
