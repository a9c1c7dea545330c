"""The Storm-Graph Transformer, one module per part."""
