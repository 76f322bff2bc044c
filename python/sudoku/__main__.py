"""`python -m sudoku ...` is the data CLI, `python -m sudoku.data ...` (generate, check)."""
from sudoku.data import main

if __name__ == "__main__":
    main()
