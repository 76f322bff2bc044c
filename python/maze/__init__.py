"""Maze-Unique, EqR's second task: 2-D mazes where a model marks the unique shortest path
from S to G.

  maze.tokens    the alphabet '# SGo' and its token ids (EqR's)
  maze.data      EqR's npy dataset folders: read (validated) and write (atomic)
  maze.generate  random mazes with a unique shortest path of a chosen length (EqR's builder)
  maze.score     exact match and path validity of predictions
  python -m maze generate | check   (maze/__main__.py)
This package depends on numpy (and eqkernels.progress) only; the model that solves mazes is
the EqR reasoner with attention token mixing (eqkernels.nn.SelfAttention, RoPE).
"""
