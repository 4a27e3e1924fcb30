"""Models: segtune's MixTransformer family and checkpoint conversion."""
