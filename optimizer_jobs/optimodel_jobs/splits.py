"""Data roles: which rows of the evaluation data may be looked at by what (issue 13).

- **tuning**: the rows any search or selection may look at (the static-int8 fallback's rounds, ``auto``'s
  tie-break among variants that tie);
- **held-out**: only the gate's final verdict and the figures reported;
- **calibration**: only with the user's explicit leave (``evaluation.split.calibrationFraction`` > 0),
  rows that calibrate and train; they reach neither tuning nor held-out.

One dataset is split by a hash of each row (the model's inputs as bound, the label and the slice columns) with
the seed: a row's role does not depend on the order of the file, its format or the other rows, and two
identical rows always share a role, so a duplicate of a held-out row never tunes.
Pure, numpy and the standard library only.
"""

from __future__ import annotations

import hashlib
import numpy as np

from optimodel_contracts.jobconfig import SplitSpec
from optimodel_jobs.datasets import Dataset

HELD_OUT, TUNING, CALIBRATION = 0, 1, 2
METHOD = ("sha256(seed, row: bound inputs, label, slice columns as float64 / text) -> u in [0, 1): "
          "calibration below calibrationFraction, then tuning, the rest held out")
_SCALE = float(2**64)


def row_positions(columns: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Per row, a number in [0, 1) from sha256(seed, the row's values over every column, in name order).
    Numbers are hashed as float64 (an int64 label 3 and a float 3.0 are the same value), text by its printed form."""
    names = sorted(columns)
    if not names:
        return np.zeros(0)
    count = len(columns[names[0]])
    if count == 0:
        return np.zeros(0)  # bind says "holds no samples", naming the dataset
    header = [f"optimodel-split:{seed}".encode()]
    fixed: list[np.ndarray] = []  # numbers: fixed-width bytes per row, hashed as one block
    variable: list[list[bytes]] = []  # text and objects: their printed form (stable; their pointers are not)
    for name in names:
        array = np.asarray(columns[name])
        header.append(name.encode())
        if array.dtype.kind in "biuf":
            flat = np.ascontiguousarray(array.reshape(count, -1), dtype=np.float64)
            fixed.append(flat.view(np.uint8).reshape(count, -1))
        else:
            variable.append([repr(np.asarray(value).tolist()).encode() for value in array])
    block = np.concatenate(fixed, axis=1) if fixed else np.zeros((count, 0), dtype=np.uint8)
    prefix = b"\x00".join(header)
    positions = np.empty(count, dtype=np.float64)
    for row in range(count):
        digest = hashlib.sha256(prefix)
        digest.update(block[row].tobytes())
        for column in variable:
            digest.update(len(column[row]).to_bytes(8, "little"))  # no two splittings of the text hash alike
            digest.update(column[row])
        positions[row] = int.from_bytes(digest.digest()[:8], "little") / _SCALE
    return positions


def assign_roles(data: Dataset, split: SplitSpec, tuning_given: bool) -> np.ndarray:
    """Per row of ``data`` (bound: the model's inputs, the label, the slice columns): HELD_OUT, TUNING or
    CALIBRATION. Hashing the bound row, not the file's bytes, gives the same roles to the same rows whatever the
    file format (an .npz array or a table's columns). With a tuning dataset of its own (``tuning_given``) no row
    of ``data`` tunes; the calibration share applies either way."""
    columns = {f"input:{name}": values for name, values in data.inputs.items()}
    if data.labels is not None:
        columns["label"] = data.labels
    columns.update({f"slice:{name}": values for name, values in data.slices.items()})
    positions = row_positions(columns, split.seed)
    roles = np.full(len(positions), HELD_OUT, dtype=np.int8)
    calibration_end = split.calibration_fraction
    roles[positions < calibration_end] = CALIBRATION
    if not tuning_given:
        roles[(positions >= calibration_end) & (positions < calibration_end + split.tuning_fraction)] = TUNING
    return roles


def subset(data: Dataset, mask: np.ndarray, uri: str) -> Dataset:
    """The rows of ``data`` where ``mask`` holds, in their order, under ``uri`` (which names the split)."""
    return Dataset(
        uri,
        {name: np.ascontiguousarray(values[mask]) for name, values in data.inputs.items()},
        None if data.labels is None else data.labels[mask],
        {name: values[mask] for name, values in data.slices.items()},
    )

