"""DepthShrinker, reproduced: shrink inverted-residual networks by removing activations and merging."""
