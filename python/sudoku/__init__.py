"""Sudoku, a task of the equilibrium reasoner (python/reasoner): tokens, the Sudoku-Extreme
CSV and EqR's npy folders, the puzzle generator and rater, augmentation, and the task object
(sudoku.task) the reasoner's training and evaluation run with; `python -m sudoku`.

Import submodules directly (`from sudoku import data`); this file imports nothing so that the
data tools do not pull in the model and the model does not pull in the generator.
"""
