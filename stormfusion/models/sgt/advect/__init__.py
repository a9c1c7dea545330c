"""``sgt_advect``: our Storm-Graph Transformer (advection decoder)."""
