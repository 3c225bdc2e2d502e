"""FeatureExtractor: images of an Examples artifact -> backbone features, as Examples."""
