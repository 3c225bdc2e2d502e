"""BleuEvaluator: captions for the eval split through the serving signature, BLEU, blessing."""
