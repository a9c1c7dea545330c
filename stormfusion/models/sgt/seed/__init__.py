"""``sgt``: the seed study's Storm-Graph Transformer, part by part as its authors built it."""
