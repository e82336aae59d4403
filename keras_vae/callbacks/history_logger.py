"""HistoryLogger: keras.callbacks.CSVLogger(append=True) that never leaves a torn file."""

import csv
import io

import keras

from keras_vae.files import atomic_write_text


def read_rows(path):
    """(header, rows) of a history CSV, rows as dicts of numbers ("epoch" an int), skipping
    what a crash or a second writer can leave behind: a torn last row, repeated headers, rows
    that do not parse. ([], []) when there is no such file or no "epoch" column."""
    try:
        with open(path, newline="") as handle:
            lines = list(csv.reader(handle))
    except FileNotFoundError:
        return [], []
    if not lines or "epoch" not in lines[0]:
        return [], []
    header, rows = lines[0], []
    for line in lines[1:]:
        if len(line) != len(header) or line == header:
            continue
        try:
            rows.append({k: int(v) if k == "epoch" else float(v) for k, v in zip(header, line)})
        except ValueError:
            continue
    return header, rows


def write_rows(path, header, rows):
    """Writes a history CSV atomically (temporary name, then os.replace)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n", extrasaction="ignore",
                            restval="nan")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


class HistoryLogger(keras.callbacks.Callback):
    """Appends one row of logs per epoch to a CSV file, like `keras.callbacks.CSVLogger(path,
    append=True)` (an "epoch" column, then the metrics in sorted order), but rewrites the whole
    file under a temporary name and renames it over the old one after each epoch: a kill at
    any moment leaves the file of the last finished epoch, never a torn row. Rows already in
    the file are kept (a resumed run continues it).

    Args:
        path: the CSV file.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.header, self.rows = [], []

    def on_train_begin(self, logs=None):
        self.header, self.rows = read_rows(self.path)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch)}
        for key, value in sorted((logs or {}).items()):
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                continue
        if not self.header:
            self.header = list(row)
        else:
            self.header += [k for k in row if k not in self.header]
        self.rows.append(row)
        write_rows(self.path, self.header, self.rows)
