"""Sudoku equilibrium reasoner: data (tokens, CSV, generator, augmentation), model, training.

Import submodules directly (`from sudoku import data`); this file imports nothing so that the
data tools do not pull in the model and the model does not pull in the generator.
"""
