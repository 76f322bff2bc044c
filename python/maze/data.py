"""EqR's npy dataset folders for mazes: read (every field validated) and write (atomically).

The layout (EqR's dataset/build_maze_unique_dataset.py; HRM's PuzzleDataset reads it):
  DIR/identifiers.json              ["<blank>"]
  DIR/<split>/dataset.json          {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0,
                                     "vocab_size": 6, "seq_len": H * W, "num_puzzle_identifiers": 1,
                                     "total_groups": N, "mean_puzzle_examples": 1.0,
                                     "sets": ["all"], "total_samples": N}
  DIR/<split>/<set>__inputs.npy     (N, H * W) uint8 maze tokens (maze.tokens: 1-4)
  DIR/<split>/<set>__labels.npy     (N, H * W) uint8: the input with the path marked 5
  DIR/<split>/<set>__puzzle_identifiers.npy  (P,) int32, each < num_puzzle_identifiers (all 0)
  DIR/<split>/<set>__puzzle_indices.npy      (P + 1,) int32: puzzle p = examples [i[p], i[p+1])
  DIR/<split>/<set>__group_indices.npy       (G + 1,) int32: group g = puzzles [i[g], i[g+1])
EqR writes one example per puzzle and one puzzle per group (both indices 0..N), splits
"train" and "test". The grid is square (H = W = sqrt(seq_len)) unless dataset.json has
board_height and board_width, which we write only for non-square grids (EqR's loader
ignores extra fields).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from maze.tokens import (CHARSET, GOAL, INPUT_TOKENS, LABEL_TOKENS, OPEN, PAD, PATH, START,
                         VOCAB_SIZE)

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
SPLITS = ("train", "test")
IDENTIFIERS = ["<blank>"]
# dataset.json: field -> accepted JSON types (EqR's PuzzleDatasetMetadata), required unless None ok.
_META_TYPES = {"pad_id": (int,), "ignore_label_id": (int, type(None)), "blank_identifier_id": (int,),
               "vocab_size": (int,), "seq_len": (int,), "num_puzzle_identifiers": (int,),
               "total_groups": (int,), "mean_puzzle_examples": (int, float), "sets": (list,)}


@dataclass
class MazeSplit:
    """One split of a maze dataset. inputs, labels: (N, H * W) int64 tokens (all sets, in
    the order of dataset.json's "sets"); indices[set] = (puzzle_identifiers, puzzle_indices,
    group_indices) as in the files; meta: dataset.json."""
    folder: str
    height: int
    width: int
    inputs: np.ndarray
    labels: np.ndarray
    meta: dict
    indices: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)

    def grids(self) -> Tuple[np.ndarray, np.ndarray]:
        """(inputs, labels) as (N, H, W)."""
        shape = (len(self.inputs), self.height, self.width)
        return self.inputs.reshape(shape), self.labels.reshape(shape)


def split_folder(path: str, split: str) -> str:
    """The folder holding dataset.json: `path` itself or `path/split`."""
    if os.path.isfile(os.path.join(path, "dataset.json")):
        return path
    if os.path.isfile(os.path.join(path, split, "dataset.json")):
        return os.path.join(path, split)
    if not os.path.exists(path):
        raise ValueError(f"data {path} does not exist")
    raise ValueError(f"{path}: not an EqR dataset folder (no dataset.json in it or in "
                     f"{os.path.join(path, split)})")


def _read_meta(folder: str) -> dict:
    file = os.path.join(folder, "dataset.json")
    try:
        with open(file) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{file}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    for name, types in _META_TYPES.items():
        if name not in meta:
            raise ValueError(f"{file}: field {name!r} is missing")
        v = meta[name]
        if isinstance(v, bool) or not isinstance(v, types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{file}: field {name!r} must be {want}, got {v!r}")
    if meta.get("total_samples") is not None and (isinstance(meta["total_samples"], bool)
                                                  or not isinstance(meta["total_samples"], int)):
        raise ValueError(f"{file}: field 'total_samples' must be int or null, got "
                         f"{meta['total_samples']!r}")
    sets = meta["sets"]
    names_ok = all(isinstance(s, str) and s and "/" not in s for s in sets)
    if not sets or not names_ok or len(set(sets)) != len(sets):
        raise ValueError(f"{file}: field 'sets' must be a non-empty list of distinct names, got "
                         f"{sets!r}")
    expect = {"vocab_size": VOCAB_SIZE, "pad_id": PAD}
    for name, want in expect.items():
        if meta[name] != want:
            raise ValueError(f"{file}: field {name!r} is {meta[name]}; a maze dataset has {want} "
                             f"(tokens: pad 0, then {CHARSET!r} as 1..{len(CHARSET)})")
    if meta["ignore_label_id"] not in (PAD, None):
        raise ValueError(f"{file}: field 'ignore_label_id' is {meta['ignore_label_id']}; a maze "
                         f"dataset ignores label {PAD} (pad) or nothing (null)")
    if meta["num_puzzle_identifiers"] < 1:
        raise ValueError(f"{file}: field 'num_puzzle_identifiers' must be >= 1, got "
                         f"{meta['num_puzzle_identifiers']}")
    return meta


def board_of(meta: dict, file: str = "dataset.json") -> Tuple[int, int]:
    """(height, width) of the grid: board_height / board_width if given, else the square
    root of seq_len."""
    seq_len = meta["seq_len"]
    if "board_height" in meta or "board_width" in meta:
        h, w = meta.get("board_height"), meta.get("board_width")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in (h, w)):
            raise ValueError(f"{file}: fields 'board_height' and 'board_width' must both be ints "
                             f">= 2, got {h!r} and {w!r}")
        if h * w != seq_len:
            raise ValueError(f"{file}: board_height x board_width = {h}x{w} = {h * w}, but field "
                             f"'seq_len' is {seq_len}")
        return h, w
    side = math.isqrt(seq_len) if seq_len > 0 else 0
    if side < 2 or side * side != seq_len:
        raise ValueError(f"{file}: field 'seq_len' is {seq_len}, not a square grid (n x n, n >= 2); "
                         f"a non-square grid needs 'board_height' and 'board_width'")
    return side, side


def _load(folder: str, set_name: str, name: str) -> np.ndarray:
    file = os.path.join(folder, f"{set_name}__{name}.npy")
    if not os.path.isfile(file):
        raise ValueError(f"{file}: missing")
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{file}: not a readable .npy array ({e})") from None
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{file}: expected an integer array, got dtype {arr.dtype}")
    return arr


def _check_offsets(arr: np.ndarray, file: str, end: int, what: str) -> None:
    """arr: (K + 1,) offsets 0 = arr[0] <= ... <= arr[-1] = end."""
    if arr.ndim != 1 or len(arr) < 2:
        raise ValueError(f"{file}: expected a 1-D array of at least 2 offsets, got shape {arr.shape}")
    if arr[0] != 0 or arr[-1] != end:
        raise ValueError(f"{file}: must start at 0 and end at {end} (the number of {what}), got "
                         f"{int(arr[0])} .. {int(arr[-1])}")
    down = np.flatnonzero(np.diff(arr.astype(np.int64)) < 0)
    if down.size:
        raise ValueError(f"{file}: offsets must not decrease, entry {int(down[0]) + 1} is "
                         f"{int(arr[down[0] + 1])} after {int(arr[down[0]])}")


def _cell(j: int, width: int) -> str:
    return f"cell {j} (row {j // width}, column {j % width})"


def check_tokens(inputs: np.ndarray, labels: np.ndarray, width: int,
                 where: Tuple[str, str] = ("inputs", "labels")) -> None:
    """Raise ValueError at the first bad example. inputs, labels: (N, H * W) integer tokens.

    Inputs hold only '#', ' ', 'S', 'G' with exactly one S and one G; a label equals its
    input except that open cells may be 'o'. `where` names the two arrays in messages.
    """
    name_i, name_l = where
    bad = np.argwhere(~np.isin(inputs, INPUT_TOKENS))
    if len(bad):
        k, j = (int(v) for v in bad[0])
        raise ValueError(f"{name_i} example {k}: token {int(inputs[k, j])} at {_cell(j, width)}; "
                         f"inputs hold 1-4 ({CHARSET[:4]!r})")
    bad = np.argwhere(~np.isin(labels, LABEL_TOKENS))
    if len(bad):
        k, j = (int(v) for v in bad[0])
        raise ValueError(f"{name_l} example {k}: token {int(labels[k, j])} at {_cell(j, width)}; "
                         f"labels hold 1-5 ({CHARSET!r})")
    for token, char in ((START, "S"), (GOAL, "G")):
        counts = (inputs == token).sum(axis=1)
        wrong = np.flatnonzero(counts != 1)
        if wrong.size:
            k = int(wrong[0])
            raise ValueError(f"{name_i} example {k}: {int(counts[k])} '{char}' cells, expected "
                             f"exactly 1")
    differs = (labels != inputs) & ~((inputs == OPEN) & (labels == PATH))
    bad = np.argwhere(differs)
    if len(bad):
        k, j = (int(v) for v in bad[0])
        raise ValueError(f"{name_l} example {k}: {_cell(j, width)} is "
                         f"{CHARSET[int(labels[k, j]) - 1]!r} but the input has "
                         f"{CHARSET[int(inputs[k, j]) - 1]!r} (a label only marks open cells 'o')")


def check_paths(inputs: np.ndarray, labels: np.ndarray, height: int, width: int,
                where: str = "labels") -> None:
    """Raise ValueError unless every label's 'o' cells form a shortest S-G path."""
    from maze.score import as_grids, path_is_valid
    valid = path_is_valid(as_grids(inputs, height, width), as_grids(labels, height, width))
    bad = np.flatnonzero(~valid)
    if bad.size:
        raise ValueError(f"{where} example {int(bad[0])}: its 'o' cells are not a shortest S-G path "
                         f"({bad.size} of {len(valid)} examples are not)")


def read_split(path: str, split: str = "test", size: Optional[Tuple[int, int]] = None,
               limit: Optional[int] = None, paths: bool = False) -> MazeSplit:
    """One split of an EqR maze dataset folder, validated; `path` is the dataset root (with
    train/ and test/) or a split folder. size: the (height, width) the caller expects (a
    different grid is refused). limit: the first `limit` examples only. paths: also check
    that every label marks a shortest S-G path (a BFS per maze)."""
    folder = split_folder(path, split)
    meta = _read_meta(folder)
    meta_file = os.path.join(folder, "dataset.json")
    height, width = board_of(meta, meta_file)
    if size is not None and tuple(size) != (height, width):
        raise ValueError(f"{folder}: the grid is {height}x{width}, expected {size[0]}x{size[1]}")
    seq_len = meta["seq_len"]
    inputs, labels, indices, total_groups, total = [], [], {}, 0, 0
    for set_name in meta["sets"]:
        arrays = {name: _load(folder, set_name, name) for name in FIELDS}
        files = {name: os.path.join(folder, f"{set_name}__{name}.npy") for name in FIELDS}
        for name in ("inputs", "labels"):
            arr = arrays[name]
            if arr.ndim != 2 or arr.shape[1] != seq_len:
                raise ValueError(f"{files[name]}: expected (N, {seq_len}) for a {height}x{width} "
                                 f"grid, got shape {arr.shape}")
        n = len(arrays["inputs"])
        if arrays["labels"].shape != arrays["inputs"].shape:
            raise ValueError(f"{files['labels']}: shape {arrays['labels'].shape} differs from "
                             f"{set_name}__inputs.npy's {arrays['inputs'].shape}")
        ids = arrays["puzzle_identifiers"]
        if ids.ndim != 1:
            raise ValueError(f"{files['puzzle_identifiers']}: expected a 1-D array, got shape "
                             f"{ids.shape}")
        _check_offsets(arrays["puzzle_indices"], files["puzzle_indices"], n, "examples")
        if len(ids) != len(arrays["puzzle_indices"]) - 1:
            raise ValueError(f"{files['puzzle_identifiers']}: {len(ids)} entries for "
                             f"{len(arrays['puzzle_indices']) - 1} puzzles")
        if ids.size and (ids.min() < 0 or ids.max() >= meta["num_puzzle_identifiers"]):
            raise ValueError(f"{files['puzzle_identifiers']}: identifiers must lie in [0, "
                             f"{meta['num_puzzle_identifiers']}) (num_puzzle_identifiers), got "
                             f"{int(ids.min())}..{int(ids.max())}")
        _check_offsets(arrays["group_indices"], files["group_indices"], len(ids), "puzzles")
        total_groups += len(arrays["group_indices"]) - 1
        total += n
        inp = arrays["inputs"][:limit].astype(np.int64)
        lab = arrays["labels"][:limit].astype(np.int64)
        check_tokens(inp, lab, width, (files["inputs"], files["labels"]))
        if paths:
            check_paths(inp, lab, height, width, files["labels"])
        inputs.append(inp)
        labels.append(lab)
        indices[set_name] = (ids, arrays["puzzle_indices"], arrays["group_indices"])
        if limit is not None:
            limit -= len(inp)
            if limit <= 0:
                break
    if limit is None:
        if meta["total_groups"] != total_groups:
            raise ValueError(f"{meta_file}: field 'total_groups' is {meta['total_groups']}, the "
                             f"group_indices files hold {total_groups}")
        if meta.get("total_samples") is not None and meta["total_samples"] != total:
            raise ValueError(f"{meta_file}: field 'total_samples' is {meta['total_samples']}, the "
                             f"inputs files hold {total}")
    inputs, labels = np.concatenate(inputs), np.concatenate(labels)
    if not len(inputs):
        raise ValueError(f"{folder}: the dataset is empty")
    return MazeSplit(folder, height, width, inputs, labels, meta, indices)


def check_output(root: str) -> None:
    """Raise ValueError unless a dataset can be written at `root`: it must not exist (or be
    an empty folder) and its parent must be writable. Creates nothing that stays."""
    if os.path.isfile(root) or os.path.islink(root):
        raise ValueError(f"--out {root} is a file; give a folder that does not exist yet")
    if os.path.isdir(root) and os.listdir(root):
        raise ValueError(f"--out {root} already exists and is not empty; give a new folder")
    parent = os.path.dirname(os.path.abspath(root))
    try:
        os.makedirs(parent, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".maze-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as e:
        raise ValueError(f"--out {root}: cannot write in {parent} ({e.strerror or e})") from None


def _metadata(n: int, height: int, width: int) -> dict:
    meta = {"pad_id": PAD, "ignore_label_id": PAD, "blank_identifier_id": 0,
            "vocab_size": VOCAB_SIZE, "seq_len": height * width, "num_puzzle_identifiers": 1,
            "total_groups": n, "mean_puzzle_examples": 1.0, "sets": ["all"], "total_samples": n}
    if height != width:
        meta.update(board_height=height, board_width=width)
    return meta


def write_dataset(root: str, splits: Mapping[str, Tuple[np.ndarray, np.ndarray]], height: int,
                  width: int, paths: bool = True) -> None:
    """Write {split: (inputs, labels)}, each (N, H * W) tokens, as an EqR dataset folder at
    `root` (check_output's rules): everything is written into a hidden folder beside it and
    renamed into place at the end, so `root` is either complete or absent. The tokens (and,
    with paths=True, the labels' shortest paths) are checked first."""
    if not splits:
        raise ValueError("no splits to write")
    arrays = {}
    for name, (inputs, labels) in splits.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"split name {name!r} is not a folder name")
        inputs, labels = np.asarray(inputs), np.asarray(labels)
        shape_ok = inputs.ndim == 2 and inputs.shape[1] == height * width and len(inputs) > 0
        if not shape_ok or labels.shape != inputs.shape:
            raise ValueError(f"split {name!r}: inputs and labels must both be (N >= 1, "
                             f"{height * width}) for a {height}x{width} grid, got {inputs.shape} "
                             f"and {labels.shape}")
        check_tokens(inputs, labels, width, (f"split {name!r} inputs", f"split {name!r} labels"))
        if paths:
            check_paths(inputs, labels, height, width, f"split {name!r} labels")
        arrays[name] = (inputs.astype(np.uint8), labels.astype(np.uint8))
    check_output(root)
    parent = os.path.dirname(os.path.abspath(root))
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(root))}.tmp-", dir=parent)
    try:
        for name, (inputs, labels) in arrays.items():
            folder = os.path.join(staging, name)
            os.makedirs(folder)
            n = len(inputs)
            with open(os.path.join(folder, "dataset.json"), "w") as f:
                json.dump(_metadata(n, height, width), f)
            count = np.arange(n + 1, dtype=np.int32)
            files = dict(inputs=inputs, labels=labels, puzzle_identifiers=np.zeros(n, np.int32),
                         puzzle_indices=count, group_indices=count)
            for field_name in FIELDS:
                np.save(os.path.join(folder, f"all__{field_name}.npy"), files[field_name])
        with open(os.path.join(staging, "identifiers.json"), "w") as f:
            json.dump(IDENTIFIERS, f)
        os.chmod(staging, 0o777 & ~_umask())
        if os.path.isdir(root):
            os.rmdir(root)            # empty (check_output): replaced by the finished folder
        os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_dataset(path: str, size: Optional[Tuple[int, int]] = None,
                 splits: Sequence[str] = SPLITS, paths: bool = False) -> Dict[str, MazeSplit]:
    """{split: MazeSplit} of a dataset root (all `splits` must be present)."""
    return {s: read_split(os.path.join(path, s), s, size=size, paths=paths) for s in splits}
