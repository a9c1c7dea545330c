"""The Storm-Graph Transformer family.

- :mod:`stormfusion.models.sgt.seed`: ``sgt``, the seed study's SGT as its authors built it;
- :mod:`stormfusion.models.sgt.advect`: ``sgt_advect``, our design (advection decoder);
- shared parts, one implementation each with arguments: :mod:`.detector` (storm cells),
  :mod:`.graph` (kNN graph and GAT stack), :mod:`.splat` (Gaussian splatting) and
  :mod:`.transformer` (positional encoding and patch transformer).
"""
