"""A small Medusa runtime: heads, tree buffers, tree decoding over Hugging Face models, and a benchmark.

Importing the package imports nothing heavy; torch loads with the submodules that need it.
This package never imports ``treeopt``.
"""
