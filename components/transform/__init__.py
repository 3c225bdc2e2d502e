"""Transform: captions -> normalised words -> token ids; the vocabulary is a graph asset."""
